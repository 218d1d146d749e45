# shellcheck shell=bash
# Environment of an espnet_prune recipe; sourced by asr.sh / slu.sh, local/data.sh and
# prune_stages.sh from the recipe directory.
#
# The ESPnet checkout is the one that setup.sh linked utils/ from. Its Python environment
# (tools/activate_python.sh, made by ESPnet's installer) is activated when it exists, and so
# are its extra tools (tools/extra_path.sh: sclite for scoring, ...). espnet_prune must be
# installed in that Python environment.

if [ ! -L utils ]; then
    echo "path.sh: $(pwd)/utils is not linked to an ESPnet checkout;" \
        "run ../../TEMPLATE_prune/setup.sh /path/to/espnet here first" >&2
    return 1
fi
espnet_utils=$(readlink utils)
MAIN_ROOT=${espnet_utils%/egs2/TEMPLATE/asr1/utils}
if [ "${MAIN_ROOT}" = "${espnet_utils}" ]; then
    echo "path.sh: $(pwd)/utils points to ${espnet_utils}, not into an ESPnet checkout;" \
        "run ../../TEMPLATE_prune/setup.sh /path/to/espnet again" >&2
    return 1
fi
export MAIN_ROOT

if [ -f "${MAIN_ROOT}/tools/activate_python.sh" ]; then
    # shellcheck source=/dev/null
    . "${MAIN_ROOT}/tools/activate_python.sh"
fi
if [ -f "${MAIN_ROOT}/tools/extra_path.sh" ]; then
    # shellcheck source=/dev/null
    . "${MAIN_ROOT}/tools/extra_path.sh"
fi
export PATH="${PWD}/utils:${MAIN_ROOT}/utils:${PATH}"

export LC_ALL=C
# Python reads and writes UTF-8 even though LC_ALL=C.
export PYTHONIOENCODING=UTF-8
export OMP_NUM_THREADS=1
# Network interfaces NCCL must not use for multi-GPU training; adjust for your machines.
export NCCL_SOCKET_IFNAME="^lo,docker,virbr,vmnet,vboxnet"
