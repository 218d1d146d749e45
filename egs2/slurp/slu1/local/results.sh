#!/usr/bin/env bash
# Called by ../../TEMPLATE_prune/prune_stages.sh after slu.sh's stage 13, which rewrites
# EXP_DIR/RESULTS.md from the WER/CER scores only: appends the intent accuracy of every
# decoded set (local/score.sh's EXP_DIR/*/*/score_intent/result.txt).
#     local/results.sh EXP_DIR
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "Usage: $0 EXP_DIR" >&2
    exit 2
fi
python3 "$(dirname "$0")/score_intent.py" --results "$1"
