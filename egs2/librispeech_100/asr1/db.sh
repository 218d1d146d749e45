# shellcheck shell=bash
# Where the corpus is. This recipe never downloads it: LIBRISPEECH is the directory that holds
# LibriSpeech/ with train-clean-100, dev-clean, dev-other, test-clean and test-other unpacked
# from https://www.openslr.org/12. Set it here or in the environment.
export LIBRISPEECH="${LIBRISPEECH:-}"
