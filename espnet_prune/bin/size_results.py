"""RESULTS.md of every size of one multi-size run, after asr.sh / slu.sh scored each.

``egs2/TEMPLATE_prune/prune_stages.sh`` exports a run with ``frontend_conf.pruning.targets``
to ``EXP_pruned/target0.80/``, ``EXP_pruned/target0.60/`` ... (``espnet_prune.bin.export``,
which also writes ``EXP_pruned/summary.json``), decodes and scores each size as its own
experiment (stages 12-13), and then runs::

    python -m espnet_prune.bin.size_results EXP_pruned

which writes ``EXP_pruned/RESULTS.md``: one row per size and test set with the size's
parameter and MAC ratios and the error rates sclite scored (the ``Err`` column of every
``<size>/<decode dir>/<test set>/score_{wer,cer,ter}/result.txt``) and, for SLU, the intent
accuracy (``score_intent/result.txt``, the SLU recipes' ``local/score.sh``), and prints it.
A run with ``model_conf.pruning`` (the whole model) is exported the same way; its rows give the
whole model's ratios (the parts its budget covers, MACs of the decode it is priced for) before
the SSL frontend's.
"""

import argparse
import re
from pathlib import Path
from typing import Dict, List, Optional

from espnet_prune.export.report import SizesSummary

#: Score directories asr.sh / slu.sh stage 13 writes, in column order (error rates) ...
METRICS = ("wer", "cer", "ter")
#: ... and the SLU recipes' intent accuracy.
INTENT = "intent"
_INTENT_RESULT = re.compile(r"intent accuracy: ([\d.]+) %")


def read_error_rate(result: Path) -> Optional[float]:
    """The ``Err`` column of the ``Sum/Avg`` line of an sclite ``result.txt`` (percent), or ``None``."""
    for line in result.read_text(encoding="utf-8", errors="replace").splitlines():
        if "Sum/Avg" in line:
            numbers = re.findall(r"\d+(?:\.\d+)?", line.split("Sum/Avg", 1)[1])
            # Snt Wrd | Corr Sub Del Ins Err S.Err
            if len(numbers) >= 7:
                return float(numbers[6])
    return None


def size_scores(size_dir: Path) -> Dict[str, Dict[str, float]]:
    """``{"<decode dir>/<test set>": {"wer": 12.3, "cer": 4.5}}`` of one size's experiment."""
    scores: Dict[str, Dict[str, float]] = {}
    for metric in METRICS:
        for result in sorted(size_dir.glob(f"*/*/score_{metric}/result.txt")):
            value = read_error_rate(result)
            if value is not None:
                key = f"{result.parents[2].name}/{result.parents[1].name}"
                scores.setdefault(key, {})[metric] = value
    for result in sorted(size_dir.glob(f"*/*/score_{INTENT}/result.txt")):
        match = _INTENT_RESULT.search(result.read_text(encoding="utf-8", errors="replace"))
        if match:
            scores.setdefault(f"{result.parents[2].name}/{result.parents[1].name}", {})[INTENT] = float(match.group(1))
    return scores


def results_table(output_dir: Path) -> str:
    """The markdown of ``output_dir/RESULTS.md`` (see the module docstring)."""
    written = SizesSummary.read(output_dir / "summary.json")
    rows: List[Dict] = []
    for entry in written.sizes:
        scores = size_scores(output_dir / entry.size)
        for test, values in (scores.items() or [("–", {})]):
            rows.append({"entry": entry, "test": test, "values": values})
    metrics = [m for m in METRICS + (INTENT,) if any(m in row["values"] for row in rows)]
    whole = written.whole_model()
    ratios = ("model params ratio | model MACs ratio | frontend params ratio | frontend MACs ratio" if whole
              else "params ratio | MACs ratio")
    lines = ["# RESULTS: every size of one multi-size run", "",
             (f"Every size exported by espnet_prune.bin.export from `{written.model_file}` (`summary.md` gives "
              "params and MACs); each size is its own experiment directory with its own RESULTS.md."), "",
             f"| size | target | {ratios} | decode / test set | "
             + " | ".join("intent accuracy (%)" if m == INTENT else f"{m.upper()} (%)" for m in metrics) + " |",
             "| --- | --- | " + "--- | " * len(ratios.split(" | ")) + "--- | "
             + " | ".join("---" for _ in metrics) + " |"]
    if whole:
        lines[2] += (" The model ratios are the whole model's: the parts its budget covers, MACs of the decode "
                     "it is priced for (each size's report, `model`).")
    for row in rows:
        entry = row["entry"]
        targets = ", ".join(f"{name} {value:.2f}" for name, value in entry.targets.items())
        values = " | ".join(f"{row['values'][m]:.1f}" if m in row["values"] else "–" for m in metrics)
        model = entry.model_columns() if whole else ""
        lines.append(f"| {entry.size} | {targets} | {model}{entry.params_ratio:.3f} | {entry.macs_ratio:.3f} | "
                     f"{row['test']} | {values} |")
    return "\n".join(lines) + "\n"


def main(cmd: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="export's --output_dir of a multi-size run (holds summary.json)")
    args = parser.parse_args(cmd)
    if not (args.output_dir / "summary.json").is_file():
        parser.exit(1, f"size_results: {args.output_dir / 'summary.json'} does not exist: export the run first "
                       "(python -m espnet_prune.bin.export ... --output_dir DIR)\n")
    table = results_table(args.output_dir)
    (args.output_dir / "RESULTS.md").write_text(table, encoding="utf-8")
    print(table, end="")


if __name__ == "__main__":
    main()
