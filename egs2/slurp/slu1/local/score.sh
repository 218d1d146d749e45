#!/usr/bin/env bash
# slu.sh stage 13 calls this after its WER scoring: intent accuracy of decoded sets.
#     local/score.sh EXP_DIR DECODE_SUBDIR [DECODE_SUBDIR ...]
# Every EXP_DIR/DECODE_SUBDIR holds score_wer/ref.trn and score_wer/hyp.trn, whose first
# words are the reference and predicted intents; the accuracy is written to
# EXP_DIR/DECODE_SUBDIR/score_intent/result.txt and printed.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "Usage: $0 EXP_DIR DECODE_SUBDIR [DECODE_SUBDIR ...]" >&2
    exit 2
fi
exp_dir=$1
shift
for subdir in "$@"; do
    python3 local/score_intent.py "${exp_dir}/${subdir}"
done
