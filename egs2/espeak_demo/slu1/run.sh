#!/usr/bin/env bash
# HJ-Pruning for intent classification on the offline eSpeak NG demo corpus, with ESPnet's
# slu.sh (README.md):
#     ../../TEMPLATE_prune/setup.sh /path/to/espnet     # once
#     ./run.sh                                          # stages 1-13
#     ./run.sh --stage 10 --slu_args "--max_epoch 2"    # any slu.sh option passes through
# Stage 1 synthesises the corpus (local/data.sh), stages 10-11 first train the SSL stand-in
# (conf/train_slu_ssl_standin.yaml), then the pruned system (conf/train_slu_pruned_ssl.yaml)
# is trained, exported to its compact model, decoded and scored (../run_recipe.sh); stage 13
# adds the intent accuracy to RESULTS.md (local/score.sh).
set -euo pipefail

slu_config=conf/train_slu_pruned_ssl.yaml
inference_config=conf/decode_slu.yaml

"$(dirname "$(readlink -f "$0")")/../run_recipe.sh" slu \
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
    --nlsyms_txt data/nlsyms.txt \
    --lm_train_text data/lm_train.txt \
    --use_lm false \
    --slu_config "${slu_config}" \
    --inference_config "${inference_config}" \
    --inference_slu_model valid.cer_ctc.ave.pth \
    --train_set train \
    --valid_set dev \
    --test_sets test "$@"
