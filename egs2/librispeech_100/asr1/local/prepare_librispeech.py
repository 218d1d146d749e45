#!/usr/bin/env python3
"""Write a Kaldi-style data directory for one or more unpacked LibriSpeech subsets.

    local/prepare_librispeech.py DATA_DIR SUBSET_DIR [SUBSET_DIR ...]

A SUBSET_DIR is e.g. ``$LIBRISPEECH/LibriSpeech/dev-clean``, holding
``READER/CHAPTER/READER-CHAPTER.trans.txt`` and ``READER-CHAPTER-NNNN.flac``. DATA_DIR gets
``wav.scp`` (utterance -> absolute flac path, read directly by ESPnet), ``text`` (upper-case
transcript), ``utt2spk`` and ``spk2utt``; an utterance's speaker is ``READER-CHAPTER`` as in
Kaldi's LibriSpeech recipe, so speaker ids prefix utterance ids. Several subsets are merged
(the ``dev`` set is dev-clean + dev-other). Files are sorted as Kaldi requires (LC_ALL=C).
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple


def read_subset(subset: Path) -> Dict[str, Tuple[Path, str]]:
    """``{utterance: (flac path, transcript)}`` of one subset directory."""
    if not subset.is_dir():
        raise ValueError(f"{subset} is not a directory")
    transcripts = sorted(subset.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise ValueError(f"{subset} has no READER/CHAPTER/*.trans.txt: is it an unpacked LibriSpeech subset?")
    utterances = {}
    for transcript in transcripts:
        for number, line in enumerate(transcript.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utterance, _, words = line.strip().partition(" ")
            if not words:
                raise ValueError(f"{transcript}:{number}: no transcript after '{utterance}'")
            audio = transcript.parent / f"{utterance}.flac"
            if not audio.is_file():
                raise ValueError(f"{transcript}:{number}: {audio} does not exist")
            utterances[utterance] = (audio.resolve(), " ".join(words.split()))
    return utterances


def speaker_of(utterance: str) -> str:
    """``READER-CHAPTER`` of ``READER-CHAPTER-NNNN``."""
    return utterance.rsplit("-", 1)[0]


def write_data_dir(data_dir: Path, utterances: Dict[str, Tuple[Path, str]]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(utterances)
    speakers: Dict[str, List[str]] = {}
    for key in keys:
        speakers.setdefault(speaker_of(key), []).append(key)
    files = {
        "wav.scp": [f"{key} {utterances[key][0]}" for key in keys],
        "text": [f"{key} {utterances[key][1]}" for key in keys],
        "utt2spk": [f"{key} {speaker_of(key)}" for key in keys],
        "spk2utt": [f"{speaker} {' '.join(members)}" for speaker, members in sorted(speakers.items())],
    }
    for name, lines in files.items():
        (data_dir / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="Kaldi-style data directory to write")
    parser.add_argument("subsets", type=Path, nargs="+", help="unpacked LibriSpeech subset directories")
    args = parser.parse_args(argv)
    utterances: Dict[str, Tuple[Path, str]] = {}
    try:
        for subset in args.subsets:
            found = read_subset(subset)
            repeated = sorted(set(found) & set(utterances))
            if repeated:
                raise ValueError(f"{subset} repeats utterances of an earlier subset: {repeated[:5]}")
            utterances.update(found)
    except ValueError as error:
        sys.exit(f"{parser.prog}: {error}")
    write_data_dir(args.data_dir, utterances)
    print(f"{parser.prog}: {len(utterances)} utterances -> {args.data_dir}")


if __name__ == "__main__":
    main()
