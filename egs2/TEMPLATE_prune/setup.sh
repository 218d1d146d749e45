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
# and steps from the ESPnet checkout, replacing links made by an earlier run, and then checks
# what it can and warns about what is missing (the links are made all the same):
#   - the checkout is ESPnet 202511 (espnet/version.txt or git of a full clone; else asr.sh /
#     slu.sh compared with 202511's), the release the recipes are tested with, and the Python
#     that path.sh activates has the same espnet version installed;
#   - that Python imports espnet_prune, and resampy (asr.sh / slu.sh stage 3 resamples with it);
#   - sclite (stage 13) is on the PATH that path.sh makes (tools/extra_path.sh adds the
#     checkout's tools/sctk/bin).
set -euo pipefail

#: The ESPnet release the recipes are tested with, its upstream commit, and its task scripts.
tested_version=202511
tested_commit=fe03920c3b3b245d814c50d016aa3531e65a8951
declare -A tested_sha256=(
    [asr.sh]=37693a3bde1065b5eb48f03611cc6623e1445aa1d08f8515085250a3745903b4
    [slu.sh]=dd0085cad972073cb1890a547a5c6abcd5382fb3a5e908a54726b56437b4ab7b
)

usage="Usage: $0 [ESPNET_ROOT]   (run in an asr*/ or slu*/ recipe directory; the ESPnet checkout
       comes from the argument or from the ESPNET_ROOT environment variable)"

die() {
    echo "$0: Error: $*" >&2
    exit 1
}
warn() {
    echo "$0: Warning: $*" >&2
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

# --- Checks: warnings only ----------------------------------------------------------------
checkout_version=
if [ -f "${espnet_root}/espnet/version.txt" ]; then
    checkout_version=$(tr -d '[:space:]' <"${espnet_root}/espnet/version.txt")
fi
if [ -n "${checkout_version}" ]; then
    [ "${checkout_version}" = "${tested_version}" ] ||
        warn "the checkout is ESPnet ${checkout_version} (espnet/version.txt); the recipes are tested with ESPnet
${tested_version} (git checkout v.${tested_version}, commit ${tested_commit}). A newer checkout's scripts
may call modules your installed espnet lacks (e.g. master's stage 3: No module named 'espnet2.legacy')."
else
    script=${names[0]}
    actual=$(sha256sum "${espnet_root}/${targets[0]}" | cut -d' ' -f1)
    if [ "${actual}" = "${tested_sha256[${script}]}" ]; then
        checkout_version=${tested_version}
    else
        warn "cannot tell the checkout's ESPnet version (no espnet/version.txt), and its ${script} differs from
ESPnet ${tested_version}'s, which the recipes are tested with (git checkout v.${tested_version}, commit ${tested_commit})."
    fi
fi

# The Python environment and PATH that path.sh gives asr.sh / slu.sh.
report=$(
    set +eu
    # shellcheck source=/dev/null
    [ -f "${espnet_root}/tools/activate_python.sh" ] && . "${espnet_root}/tools/activate_python.sh"
    # shellcheck source=/dev/null
    [ -f "${espnet_root}/tools/extra_path.sh" ] && . "${espnet_root}/tools/extra_path.sh"
    echo "python=$(command -v python3 || echo none)"
    echo "sclite=$(command -v sclite || echo none)"
    python3 - <<'EOF_PY' 2>/dev/null
import importlib.util
for name in ("espnet", "espnet_prune", "resampy"):
    print(f"{name}=" + ("yes" if importlib.util.find_spec(name) else "no"))
try:
    import espnet
    print("espnet_version=" + espnet.__version__)
except Exception:
    pass
EOF_PY
)
value() {
    sed -n "s/^$1=//p" <<<"${report}" | head -n 1
}
python=$(value python)
if [ "$(value espnet)" != yes ]; then
    warn "${python} (the Python that path.sh activates) cannot import espnet: install ESPnet ${tested_version}
(pip install espnet==${tested_version}) or let ${espnet_root}/tools/activate_python.sh activate an environment that has it."
else
    installed=$(value espnet_version)
    if [ -n "${checkout_version}" ] && [ "${installed}" != "${checkout_version}" ]; then
        warn "the checkout is ESPnet ${checkout_version} but ${python} has espnet ${installed} installed: use the same release for both."
    fi
fi
[ "$(value espnet_prune)" = yes ] ||
    warn "${python} cannot import espnet_prune: pip install /path/to/espnet_prune into that environment."
[ "$(value resampy)" = yes ] ||
    warn "${python} lacks resampy, which stage 3 (format_wav_scp.py) needs: pip install resampy."
if [ "$(value sclite)" = none ]; then
    hint="apt-get install sctk, then link it where ESPnet looks: ln -s /usr/lib/sctk/bin ${espnet_root}/tools/sctk/bin"
    [ ! -x /usr/lib/sctk/bin/sclite ] || hint="it is in /usr/lib/sctk/bin: mkdir -p ${espnet_root}/tools/sctk && ln -s /usr/lib/sctk/bin ${espnet_root}/tools/sctk/bin"
    warn "sclite (stage 13 scoring) is not on the PATH that path.sh makes; ${hint}
(or ESPnet's tools/installers/install_sctk.sh)."
fi
echo "$0: checkout ESPnet ${checkout_version:-of unknown version}; Python ${python} (espnet $(value espnet_version)); sclite $(value sclite)"
