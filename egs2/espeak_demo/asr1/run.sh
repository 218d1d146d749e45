#!/usr/bin/env bash
# HJ-Pruning on the offline eSpeak NG demo corpus, with ESPnet's asr.sh (README.md):
#     ../../TEMPLATE_prune/setup.sh /path/to/espnet     # once
#     ./run.sh                                          # stages 1-13
#     ./run.sh --stage 10 --asr_args "--max_epoch 2"    # any asr.sh option passes through
# Stage 1 synthesises the corpus (local/data.sh), stages 10-11 first train the SSL stand-in
# (conf/train_asr_ssl_standin.yaml), then the pruned system (conf/train_asr_pruned_ssl.yaml)
# is trained, exported to its compact model, decoded and scored (../run_recipe.sh).
set -euo pipefail

asr_config=conf/train_asr_pruned_ssl.yaml
inference_config=conf/decode_asr.yaml

"$(dirname "$(readlink -f "$0")")/../run_recipe.sh" asr \
    --python "python3 -m espnet_prune" \
    --ngpu 0 \
    --nj 2 \
    --inference_nj 2 \
    --gpu_inference false \
    --feats_type raw \
    --audio_format wav \
    --fs 16k \
    --feats_normalize none \
    --token_type char \
    --cleaner none \
    --lm_train_text data/lm_train.txt \
    --use_lm false \
    --lm_config conf/train_lm.yaml \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --inference_asr_model valid.cer_ctc.ave.pth \
    --train_set train \
    --valid_set dev \
    --test_sets test "$@"
