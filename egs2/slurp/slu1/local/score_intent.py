#!/usr/bin/env python3
"""Intent accuracy of one decoded set, and the RESULTS.md table of every decoded set.

    local/score_intent.py DECODE_DIR REF_TEXT      # slu.sh stage 13, through local/score.sh
    local/score_intent.py --results EXP_DIR        # after stage 13, through local/results.sh

The first word of each line of ``text`` ("<key> <intent> <words...>") is the intent: the
reference is REF_TEXT (the data's ``text``, e.g. ``dump/raw/test/text``), the hypothesis
``DECODE_DIR/text`` (what slu_inference decoded). Both are read before slu.sh removes
non-linguistic symbols (intents are such symbols in the espeak_demo recipe, whose word-level
``score_wer/*.trn`` therefore lack them). The accuracy is written to
``DECODE_DIR/score_intent/result.txt``, e.g. ``intent accuracy: 87.65 % (11463 / 13078)``;
utterances without a hypothesis count as errors.

``--results EXP_DIR`` appends to ``EXP_DIR/RESULTS.md`` (which slu.sh stage 13 rewrites from
its WER/CER scores) a table of every ``EXP_DIR/<inference tag>/<set>/score_intent/result.txt``.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RESULT = re.compile(r"intent accuracy: (?P<acc>[\d.]+) % \((?P<correct>\d+) / (?P<total>\d+)\)")
TABLE_TITLE = "## Intent accuracy"


def read_intents(path: Path) -> Dict[str, str]:
    """``{utterance key: first word}`` of a Kaldi ``text`` file; ``""`` when a line has no words."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    intents = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts:
            intents[parts[0]] = parts[1] if len(parts) > 1 else ""
    return intents


def intent_accuracy(references: Dict[str, str], hypotheses: Dict[str, str]) -> Tuple[int, int]:
    """``(correct, total)`` over the reference utterances."""
    correct = sum(1 for key, intent in references.items() if intent and hypotheses.get(key) == intent)
    return correct, len(references)


def score(decode_dir: Path, ref_text: Path) -> str:
    references = read_intents(ref_text)
    if not references:
        raise ValueError(f"{ref_text} is empty")
    hypotheses = read_intents(decode_dir / "text")
    unknown = sorted(set(hypotheses) - set(references))
    if unknown:
        raise ValueError(f"{decode_dir / 'text'} has utterances that {ref_text} lacks: {unknown[:5]}")
    correct, total = intent_accuracy(references, hypotheses)
    result = f"intent accuracy: {100.0 * correct / total:.2f} % ({correct} / {total})"
    out_dir = decode_dir / "score_intent"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.txt").write_text(result + "\n", encoding="utf-8")
    return f"{decode_dir}: {result}"


def append_results(exp_dir: Path) -> str:
    results_md = exp_dir / "RESULTS.md"
    rows = []
    for path in sorted(exp_dir.glob("*/*/score_intent/result.txt")):
        match = RESULT.search(path.read_text(encoding="utf-8"))
        if match is None:
            raise ValueError(f"{path} does not hold an intent accuracy")
        decode_dir = path.parent.parent
        rows.append(f"|{decode_dir.parent.name}/{decode_dir.name}|{match['total']}|{match['correct']}|{match['acc']}|")
    if not rows:
        raise ValueError(f"{exp_dir} has no */*/score_intent/result.txt: run stage 13 first")
    text = results_md.read_text(encoding="utf-8") if results_md.is_file() else ""
    text = text.split(f"\n{TABLE_TITLE}\n")[0].rstrip("\n")  # once, however often it runs
    table = [TABLE_TITLE, "", "|dataset|Snt|Correct|Acc (%)|", "|---|---|---|---|", *rows]
    results_md.write_text((text + "\n\n" if text else "") + "\n".join(table) + "\n", encoding="utf-8")
    return f"{results_md}: intent accuracy of {len(rows)} set(s)"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, metavar="EXP_DIR", help="append the table to EXP_DIR/RESULTS.md")
    parser.add_argument("decode_dir", type=Path, nargs="?", help="decoding directory of one set")
    parser.add_argument("ref_text", type=Path, nargs="?", help="reference text of that set")
    args = parser.parse_args(argv)
    if (args.results is None) == (args.decode_dir is None):
        parser.error("give DECODE_DIR REF_TEXT, or --results EXP_DIR")
    if args.decode_dir is not None and args.ref_text is None:
        parser.error("REF_TEXT is required with DECODE_DIR")
    try:
        print(append_results(args.results) if args.results else score(args.decode_dir, args.ref_text))
    except ValueError as error:
        sys.exit(f"{parser.prog}: {error}")


if __name__ == "__main__":
    main()
