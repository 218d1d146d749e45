# shellcheck shell=bash
# Where the corpus is. This recipe never downloads it: SLURP is a copy of
# https://github.com/pswietojanski/slurp with the text in dataset/slurp/*.jsonl and the audio
# (the repository's scripts/download_audio.sh) unpacked in audio/slurp_real and
# audio/slurp_synth. Set it here or in the environment.
export SLURP="${SLURP:-}"
