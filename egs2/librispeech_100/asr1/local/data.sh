#!/usr/bin/env bash
# asr.sh stage 1: Kaldi-style data directories for LibriSpeech 100 h from a local copy.
# The corpus is never downloaded; db.sh (or the environment) says where it is.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (local/data.sh) $*"
}

help_message="Usage: $0    (no arguments; LIBRISPEECH in db.sh names the directory that holds LibriSpeech/)"

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

parts="train-clean-100 dev-clean dev-other test-clean test-other"
if [ -z "${LIBRISPEECH}" ]; then
    log "Error: LIBRISPEECH is not set. Set it in db.sh (or the environment) to the directory" \
        "that holds LibriSpeech/ with ${parts} from https://www.openslr.org/12 unpacked." >&2
    exit 1
fi
missing=()
for part in ${parts}; do
    [ -d "${LIBRISPEECH}/LibriSpeech/${part}" ] || missing+=("${part}")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "Error: ${LIBRISPEECH}/LibriSpeech lacks ${missing[*]}: unpack them there from" \
        "https://www.openslr.org/12 (this recipe never downloads)." >&2
    exit 1
fi

for part in ${parts}; do
    python3 local/prepare_librispeech.py "data/${part//-/_}" "${LIBRISPEECH}/LibriSpeech/${part}"
done
python3 local/prepare_librispeech.py data/dev \
    "${LIBRISPEECH}/LibriSpeech/dev-clean" "${LIBRISPEECH}/LibriSpeech/dev-other"

for dir in train_clean_100 dev_clean dev_other test_clean test_other dev; do
    utils/validate_data_dir.sh --no-feats "data/${dir}"
done
log "Successfully finished"
