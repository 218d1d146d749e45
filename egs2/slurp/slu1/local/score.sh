#!/usr/bin/env bash
# slu.sh stage 13 calls this after its WER scoring: intent accuracy of decoded sets.
#     local/score.sh [--data_dir DIR] EXP_DIR DECODE_SUBDIR [DECODE_SUBDIR ...]
# Every EXP_DIR/DECODE_SUBDIR (e.g. decode_slu/test/) holds slu_inference's text; the reference
# is DIR/<set>/text with <set> the last part of DECODE_SUBDIR, DIR dump/raw (slu.sh's dump
# with --feats_type raw; --data_dir through slu.sh's --local_score_opts). The accuracy goes
# to EXP_DIR/DECODE_SUBDIR/score_intent/result.txt; local/results.sh puts it in RESULTS.md.
# A DECODE_SUBDIR that was not decoded is skipped with a message.
set -euo pipefail

data_dir=dump/raw
if [ $# -ge 2 ] && [ "$1" = --data_dir ]; then
    data_dir=$2
    shift 2
fi
if [ $# -lt 2 ]; then
    echo "Usage: $0 [--data_dir DIR] EXP_DIR DECODE_SUBDIR [DECODE_SUBDIR ...]" >&2
    exit 2
fi
exp_dir=$1
shift
for subdir in "$@"; do
    decode_dir=${exp_dir}/${subdir%/}
    # slu.sh names its --valid_set here too, which it decodes only if --test_sets has it.
    if [ ! -f "${decode_dir}/text" ]; then
        echo "$0: ${decode_dir} was not decoded (its set is not in --test_sets); no intent accuracy for it" >&2
        continue
    fi
    python3 "$(dirname "$0")/score_intent.py" "${decode_dir}" "${data_dir}/$(basename "${decode_dir}")/text"
done
