#!/usr/bin/env bash
# asr.sh stage 1: synthesise the offline demo corpus with eSpeak NG into data/: train, dev and
# test (Kaldi data directories, 16 kHz wav; disjoint voices), lm_train.txt (template text).
# Options come from asr.sh's --local_data_opts (./run.sh --local_data_opts "--num_train 48"):
# --num_train, --num_dev, --num_test, --num_lm_sentences, --num_dev_voices, --num_test_voices,
# --seed; python3 -m espnet_prune.demo.corpus --help lists them with their defaults.
# Nothing is downloaded.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=../path.sh
. ./path.sh

python3 -m espnet_prune.demo.corpus --output_dir data --task asr "$@"
