#!/usr/bin/env bash
# HJ-Pruning of wav2vec2-base fine-tuned for ASR on LibriSpeech 100 h, with ESPnet's asr.sh.
# See README.md. After data preparation, `./run.sh --stage 10` trains, exports the compact
# model and decodes it. The budget is a preset of conf/pruning/ (the repository's, linked):
# --asr_args "--frontend_conf pruning.preset=hj_macs0.5"; "--frontend_conf pruning=null" is the
# unpruned baseline.
set -euo pipefail

if [ ! -e asr.sh ]; then
    echo "$0: ./asr.sh is missing. Link ESPnet's recipe scripts into this directory first:" >&2
    echo "    ../../TEMPLATE_prune/setup.sh /path/to/espnet    (or set ESPNET_ROOT)" >&2
    exit 1
fi

train_set=train_clean_100
valid_set=dev
test_sets="test_clean test_other dev_clean dev_other"

asr_config=conf/train_asr_wav2vec2.yaml
inference_config=conf/decode_asr_ctc.yaml

../../TEMPLATE_prune/prune_stages.sh asr \
    --python "python3 -m espnet_prune" \
    --lang en \
    --ngpu 1 \
    --token_type bpe \
    --nbpe 5000 \
    --feats_type raw \
    --audio_format flac \
    --fs 16k \
    --max_wav_duration 30 \
    --feats_normalize utterance_mvn \
    --use_lm false \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --inference_asr_model valid.cer_ctc.ave.pth \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --bpe_train_text "data/${train_set}/text" "$@"
