#!/usr/bin/env python3
"""Write Kaldi-style data directories ``train``, ``devel`` and ``test`` for SLURP.

    local/prepare_slurp.py SLURP_DIR DATA_ROOT [--no_synthetic]

SLURP_DIR is a copy of the SLURP repository: ``dataset/slurp/{train,devel,test}.jsonl`` (and
``train_synthetic.jsonl``) hold one prompt per line with its ``scenario``, ``action``,
``sentence`` and ``recordings``; the audio files are in ``audio/slurp_real`` (and
``audio/slurp_synth`` for the synthetic training prompts). Every recording is an utterance:

* ``text``: ``<scenario>_<action> <sentence>``, the intent followed by the transcript in lower
  case with everything but letters, digits and apostrophes turned into spaces;
* ``wav.scp``: the absolute flac path (read directly by ESPnet);
* ``utt2spk`` / ``spk2utt``: every utterance is its own speaker (nothing here adapts to
  speakers).

Utterance ids are ``slurp_real_<recording>`` or ``slurp_synth_<recording>``; a recording
listed twice is kept once. ``--no_synthetic`` leaves the synthetic prompts out of ``train``.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

SUBSETS = ("train", "devel", "test")
_NOT_A_WORD_CHARACTER = re.compile(r"[^a-z0-9']+")


def normalise(sentence: str) -> str:
    """Lower case, anything but letters, digits and apostrophes as word separators."""
    return " ".join(_NOT_A_WORD_CHARACTER.sub(" ", sentence.lower()).split())


def read_prompts(jsonl: Path) -> Iterator[Tuple[str, str, List[str]]]:
    """``(intent, normalised sentence, recording file names)`` for every prompt of a jsonl file."""
    if not jsonl.is_file():
        raise ValueError(f"{jsonl} does not exist: is SLURP_DIR a copy of the SLURP repository?")
    with open(jsonl, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)
                intent = f"{prompt['scenario']}_{prompt['action']}"
                sentence = normalise(prompt["sentence"])
                files = [recording["file"] for recording in prompt["recordings"]]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{jsonl}:{number}: not a SLURP prompt ({error!r})") from error
            yield intent, sentence, files


def collect(slurp_dir: Path, subset: str, synthetic: bool) -> Dict[str, Tuple[Path, str]]:
    """``{utterance: (audio path, text)}`` of one subset."""
    sources = [("real", slurp_dir / "dataset" / "slurp" / f"{subset}.jsonl", slurp_dir / "audio" / "slurp_real")]
    if synthetic:
        sources.append(("synth", slurp_dir / "dataset" / "slurp" / "train_synthetic.jsonl",
                        slurp_dir / "audio" / "slurp_synth"))
    utterances: Dict[str, Tuple[Path, str]] = {}
    missing: List[Path] = []
    for kind, jsonl, audio_dir in sources:
        for intent, sentence, files in read_prompts(jsonl):
            for name in files:
                stem = Path(name).stem
                utterance = f"slurp_{kind}_{stem[len('audio-'):] if stem.startswith('audio-') else stem}"
                if utterance in utterances:
                    continue
                audio = audio_dir / name
                if not audio.is_file():
                    missing.append(audio)
                utterances[utterance] = (audio.resolve(), f"{intent} {sentence}".rstrip())
    if missing:
        raise ValueError(f"{len(missing)} audio files of '{subset}' are missing, e.g. {missing[0]}: unpack the "
                         "SLURP audio (the repository's scripts/download_audio.sh) into SLURP_DIR/audio")
    return utterances


def write_data_dir(data_dir: Path, utterances: Dict[str, Tuple[Path, str]]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(utterances)
    files = {
        "wav.scp": [f"{key} {utterances[key][0]}" for key in keys],
        "text": [f"{key} {utterances[key][1]}" for key in keys],
        "utt2spk": [f"{key} {key}" for key in keys],
        "spk2utt": [f"{key} {key}" for key in keys],
    }
    for name, lines in files.items():
        (data_dir / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slurp_dir", type=Path, help="copy of the SLURP repository with its audio")
    parser.add_argument("data_root", type=Path, help="where to write train/, devel/ and test/")
    parser.add_argument("--no_synthetic", action="store_true", help="leave the synthetic prompts out of train")
    args = parser.parse_args(argv)
    try:
        subsets = {subset: collect(args.slurp_dir, subset, synthetic=subset == "train" and not args.no_synthetic)
                   for subset in SUBSETS}
    except ValueError as error:
        sys.exit(f"{parser.prog}: {error}")
    for subset, utterances in subsets.items():
        write_data_dir(args.data_root / subset, utterances)
        print(f"{parser.prog}: {len(utterances)} utterances -> {args.data_root / subset}")


if __name__ == "__main__":
    main()
