#!/usr/bin/env bash
# HJ-Pruning of wav2vec2-base fine-tuned for ASR on LibriSpeech 100 h, with ESPnet's asr.sh.
# See README.md. After data preparation, `./run.sh --stage 10` trains, exports the compact
# model and decodes it. The budget is a preset of conf/pruning/ (the repository's, linked):
# --asr_args "--frontend_conf pruning.preset=hj_macs0.5"; "--frontend_conf pruning=null" is the
# unpruned baseline. --asr_config conf/train_asr_wav2vec2_conformer.yaml prunes the whole model
# (a Conformer encoder and an attention decoder after the SSL frontend, one budget in
# model_conf.pruning; doc/whole_model.md): it is exported, decoded and scored the same way,
# decoded with beam search and the attention decoder (conf/decode_asr_attention.yaml, what its
# budget is priced for) from its best-accuracy models (valid.acc.ave.pth); "--model_conf
# pruning=null" is its unpruned baseline. Several sizes from one run: pruning.targets in either.
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
inference_asr_model=valid.cer_ctc.ave.pth
# The whole-model config's decoding and model selection (see above); options given on the command
# line still win (prune_stages.sh takes the last value of a repeated option).
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --asr_config | --asr-config) asr_config=${args[i + 1]} ;;
    esac
done
if [ "$(basename "${asr_config}")" = train_asr_wav2vec2_conformer.yaml ]; then
    inference_config=conf/decode_asr_attention.yaml
    inference_asr_model=valid.acc.ave.pth
fi

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
    --inference_asr_model "${inference_asr_model}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --bpe_train_text "data/${train_set}/text" "$@"
