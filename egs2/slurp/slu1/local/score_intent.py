#!/usr/bin/env python3
"""Intent accuracy of one decoded SLURP set.

    local/score_intent.py DECODE_DIR

Reads ``DECODE_DIR/score_wer/ref.trn`` and ``hyp.trn`` (sclite's ``trn`` format, ``words ...
(speaker-utterance)``, written by slu.sh stage 13), takes the first word of each line as the
intent, and writes ``DECODE_DIR/score_intent/result.txt``:
``intent accuracy: 87.65 % (11463 / 13078)``. Utterances without a hypothesis count as errors.
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple


def read_trn(path: Path) -> Dict[str, str]:
    """``{utterance key: first word}``; the first word is ``""`` for an empty line."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run slu.sh's scoring (stage 13) first")
    intents = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not line.endswith(")") or "(" not in line:
            raise ValueError(f"{path}:{number}: not a trn line (no '(utterance)' at the end): {line!r}")
        words, _, key = line[:-1].rpartition("(")
        first = words.split()
        intents[key] = first[0] if first else ""
    return intents


def intent_accuracy(references: Dict[str, str], hypotheses: Dict[str, str]) -> Tuple[int, int]:
    """``(correct, total)`` over the reference utterances."""
    correct = sum(1 for key, intent in references.items() if hypotheses.get(key) == intent)
    return correct, len(references)


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("decode_dir", type=Path, help="decoding directory of one set")
    args = parser.parse_args(argv)
    try:
        references = read_trn(args.decode_dir / "score_wer" / "ref.trn")
        hypotheses = read_trn(args.decode_dir / "score_wer" / "hyp.trn")
    except ValueError as error:
        sys.exit(f"{parser.prog}: {error}")
    if not references:
        sys.exit(f"{parser.prog}: {args.decode_dir / 'score_wer' / 'ref.trn'} is empty")
    correct, total = intent_accuracy(references, hypotheses)
    result = f"intent accuracy: {100.0 * correct / total:.2f} % ({correct} / {total})"
    out_dir = args.decode_dir / "score_intent"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.txt").write_text(result + "\n", encoding="utf-8")
    print(f"{args.decode_dir}: {result}")


if __name__ == "__main__":
    main()
