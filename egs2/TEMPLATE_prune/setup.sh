#!/usr/bin/env bash
# Link ESPnet's recipe machinery into the espnet_prune recipe in the current directory.
#
# espnet_prune lives outside ESPnet, so its recipes cannot point at ../../TEMPLATE the way
# ESPnet's own recipes do. Run this once in a recipe directory:
#
#     cd egs2/librispeech_100/asr1
#     ../../TEMPLATE_prune/setup.sh /path/to/espnet      # or: ESPNET_ROOT=/path/to/espnet ...
#
# It links asr.sh (in asr* recipes) or slu.sh (in slu* recipes), pyscripts, scripts, utils
# and steps from the ESPnet checkout, replacing links made by an earlier run.
set -euo pipefail

usage="Usage: $0 [ESPNET_ROOT]   (run in an asr*/ or slu*/ recipe directory; the ESPnet checkout
       comes from the argument or from the ESPNET_ROOT environment variable)"

die() {
    echo "$0: Error: $*" >&2
    exit 1
}

if [ $# -gt 1 ]; then
    echo "${usage}" >&2
    exit 2
fi
if [ $# -eq 1 ]; then
    case "$1" in
        -h | --help)
            echo "${usage}"
            exit 0
            ;;
    esac
    ESPNET_ROOT=$1
fi

if [ -z "${ESPNET_ROOT:-}" ]; then
    die "ESPNET_ROOT is not set. Give the path of an ESPnet checkout as the argument or in the
ESPNET_ROOT environment variable (git clone https://github.com/espnet/espnet)."
fi
if [ ! -d "${ESPNET_ROOT}" ]; then
    die "ESPNET_ROOT=${ESPNET_ROOT} is not a directory."
fi
espnet_root=$(cd "${ESPNET_ROOT}" && pwd)

recipe_dir=$(pwd)
case "$(basename "${recipe_dir}")" in
    asr*) task_script=asr1/asr.sh ;;
    slu*) task_script=slu1/slu.sh ;;
    *) die "${recipe_dir} is not a recipe directory: run this script in an asr*/ or slu*/ recipe directory." ;;
esac

template=egs2/TEMPLATE
# Recipe entry -> path in the ESPnet checkout.
names=("${task_script#*/}" pyscripts scripts utils steps)
targets=("${template}/${task_script}" "${template}/asr1/pyscripts" "${template}/asr1/scripts"
         "${template}/asr1/utils" "${template}/asr1/steps")

missing=()
for target in "${targets[@]}"; do
    # -e follows links, so a link into an uninstalled part of the checkout counts as missing.
    [ -e "${espnet_root}/${target}" ] || missing+=("${target}")
done
if [ ${#missing[@]} -gt 0 ]; then
    die "ESPNET_ROOT=${espnet_root} is not an ESPnet checkout, or an incomplete one (in some ESPnet
versions utils and steps link into tools/kaldi, which must then be installed); it lacks ${missing[*]}"
fi

for name in "${names[@]}"; do
    if [ -e "${name}" ] && [ ! -L "${name}" ]; then
        die "${recipe_dir}/${name} exists and is not a link; move it away and run again."
    fi
done

for index in "${!names[@]}"; do
    ln -sfn "${espnet_root}/${targets[${index}]}" "${names[${index}]}"
done
echo "$0: linked ${names[*]} from ${espnet_root}/${template} into ${recipe_dir}"
