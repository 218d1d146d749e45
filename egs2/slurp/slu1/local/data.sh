#!/usr/bin/env bash
# slu.sh stage 1: Kaldi-style data directories train, devel and test for SLURP from a local
# copy. The corpus is never downloaded; db.sh (or the environment) says where it is.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (local/data.sh) $*"
}

use_synthetic=true  # also train on SLURP's synthetic (text-to-speech) recordings

help_message="Usage: $0 [--use_synthetic true|false]    (SLURP in db.sh names the copy of the SLURP repository)"

log "$0 $*"
# shellcheck source=/dev/null
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    echo "${help_message}" >&2
    exit 2
fi
# shellcheck source=../db.sh
. ./db.sh
# shellcheck source=../path.sh
. ./path.sh

if [ -z "${SLURP}" ]; then
    log "Error: SLURP is not set. Set it in db.sh (or the environment) to a copy of" \
        "https://github.com/pswietojanski/slurp with its audio unpacked in audio/." >&2
    exit 1
fi
if [ ! -d "${SLURP}/dataset/slurp" ]; then
    log "Error: ${SLURP}/dataset/slurp does not exist: SLURP must be a copy of the SLURP repository" \
        "(this recipe never downloads)." >&2
    exit 1
fi

case "${use_synthetic}" in
    true) synthetic_opts=() ;;
    false) synthetic_opts=(--no_synthetic) ;;
    *)
        log "Error: --use_synthetic must be true or false, got '${use_synthetic}'" >&2
        exit 2
        ;;
esac
python3 local/prepare_slurp.py "${SLURP}" data "${synthetic_opts[@]}"

for dir in train devel test; do
    utils/validate_data_dir.sh --no-feats "data/${dir}"
done
log "Successfully finished"
