#!/usr/bin/env bash
# HJ-Pruning of wav2vec2-base fine-tuned for intent classification on SLURP, with ESPnet's
# slu.sh. See README.md. After data preparation, `./run.sh --stage 10` trains, exports the
# compact model and decodes it. The budget is a preset of conf/pruning/ (the repository's,
# linked): --slu_args "--frontend_conf pruning.preset=hj_macs0.5"; "--frontend_conf pruning=null"
# is the unpruned baseline. --slu_config conf/train_slu_wav2vec2_whole.yaml prunes the attention
# decoder with the frontend (one budget in model_conf.pruning; doc/whole_model.md), exported,
# decoded and scored the same way; "--model_conf pruning=null" is its unpruned baseline. Several
# sizes from one run: pruning.targets in either. After stage 13, local/results.sh adds the intent
# accuracy to RESULTS.md.
set -euo pipefail

if [ ! -e slu.sh ]; then
    echo "$0: ./slu.sh is missing. Link ESPnet's recipe scripts into this directory first:" >&2
    echo "    ../../TEMPLATE_prune/setup.sh /path/to/espnet    (or set ESPNET_ROOT)" >&2
    exit 1
fi

train_set=train
valid_set=devel
test_sets="test devel"

slu_config=conf/train_slu_wav2vec2.yaml
inference_config=conf/decode_slu.yaml

../../TEMPLATE_prune/prune_stages.sh slu \
    --python "python3 -m espnet_prune" \
    --lang en \
    --ngpu 1 \
    --token_type word \
    --feats_type raw \
    --audio_format flac \
    --fs 16k \
    --max_wav_duration 30 \
    --feats_normalize utterance_mvn \
    --use_lm false \
    --slu_config "${slu_config}" \
    --inference_config "${inference_config}" \
    --inference_slu_model valid.acc.ave.pth \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" "$@"
