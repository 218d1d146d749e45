#!/usr/bin/env bash
# The espnet_prune demo with ESPnet's own slu.sh: synthetic corpus, SSL stand-in, HJ-Pruning
# systems, export, decoding, scoring and the report.
# It runs python -m espnet_prune.bin.demo in recipe mode, which makes OUTPUT_DIR/slu1 a recipe
# directory linked to this one and to the ESPnet checkout, and runs the stages there:
#
#     ESPNET_ROOT=/path/to/espnet ./run.sh [OUTPUT_DIR [demo options...]]
#
# Without an ESPnet checkout, `make demo` runs the same stages with ESPnet's binaries directly.
set -euo pipefail

if [ -z "${ESPNET_ROOT:-}" ]; then
    echo "$0: set ESPNET_ROOT to an ESPnet checkout (git clone https://github.com/espnet/espnet)" >&2
    exit 1
fi
output_dir=${1:-demo_slu}
[ $# -gt 0 ] && shift

python3 -m espnet_prune.bin.demo --task slu --espnet_root "${ESPNET_ROOT}" --output_dir "${output_dir}" "$@"
