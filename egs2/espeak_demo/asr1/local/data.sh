#!/usr/bin/env bash
# Stage 1 of asr.sh: synthesise the demo corpus with eSpeak NG into data/ (train, dev, test,
# lm_train.txt). Options (--num_train N, --seed S, ...) come from asr.sh's
# --local_data_opts; see python3 -m espnet_prune.demo.corpus --help.
set -euo pipefail

. ./path.sh

python3 -m espnet_prune.demo.corpus --output_dir data --task asr "$@"
