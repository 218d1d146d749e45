"""The paper's comparison: the demo's runs grouped by method and target over seeds, and a verdict
on each of the HJ-Pruning paper's claims.

:func:`group_runs` turns the report's system entries into one group per (method, target): every
seed's error, MACs, params and latency, and their mean, minimum and maximum. The error is the
WER for ASR and the intent error (1 - intent accuracy) for SLU, so that lower is better in both.

:func:`paper_claims` compares groups two by two. A difference counts only when it is larger than
the seeds' spread: one group is better than another when its worst seed is better than the
other's best seed (their [min, max] intervals do not overlap); otherwise the two are not
distinguishable. Each claim is checked at every MAC ratio both groups have, and its verdict is
``holds`` (better at every ratio), ``does not hold`` (worse at one ratio or more and better at
none), ``partly`` (better at some ratios, not at others) or ``not distinguishable``; for the
no-degradation claim ``holds`` means not worse at any ratio. A claim no group tests is
``not tested``.

Pure Python on purpose (no torch): the report and its tests use it on the entries of
``results.json``.
"""

import math
from typing import Dict, List, Optional, Sequence

from espnet_prune.demo.settings import MULTI_SIZE_METHODS, params_target_for_macs

#: The quantities of every run that a group summarises.
QUANTITIES = ("error", "macs_ratio", "params_ratio", "latency_ms")


def run_error(task: str, entry: Dict) -> float:
    """The error of one run (lower is better): WER for ASR, 1 - intent accuracy for SLU."""
    return 1.0 - entry["intent_acc"] if task == "slu" else entry["wer"]


def error_name(task: str) -> str:
    return "intent error" if task == "slu" else "WER"


def group_runs(task: str, systems: Sequence[Dict]) -> List[Dict]:
    """One group per (method, target) of the single-target systems, in the order they first appear.

    Returns:
        ``[{method, target, seeds, runs: [{name, seed, error, macs_ratio, params_ratio, latency_ms}],
        mean: {quantity: value}, min: {...}, max: {...}}]`` over :data:`QUANTITIES`.
    """
    groups: Dict = {}
    for entry in systems:
        if entry["method"] in MULTI_SIZE_METHODS:
            continue
        run = dict(name=entry["name"], seed=entry.get("seed", 0), error=run_error(task, entry),
                   **{key: entry[key] for key in QUANTITIES if key != "error"})
        groups.setdefault((entry["method"], entry["target"]), []).append(run)
    result = []
    for (method, target), runs in groups.items():
        summary = {name: {key: function([run[key] for run in runs]) for key in QUANTITIES}
                   for name, function in (("mean", lambda values: sum(values) / len(values)),
                                          ("min", min), ("max", max))}
        result.append(dict(method=method, target=target, seeds=[run["seed"] for run in runs], runs=runs, **summary))
    return result


def compare(first: Dict, second: Dict) -> str:
    """``better``, ``worse`` or ``overlap``: ``first`` against ``second`` by error, beyond the seeds' spread;
    ``unmeasured`` when a run of either has no finite error (a NaN compares as neither)."""
    if not all(math.isfinite(run["error"]) for run in (*first["runs"], *second["runs"])):
        return "unmeasured"
    if first["max"]["error"] < second["min"]["error"]:
        return "better"
    if first["min"]["error"] > second["max"]["error"]:
        return "worse"
    return "overlap"


def _find(groups: Sequence[Dict], method: str, target: Optional[float]) -> Optional[Dict]:
    return next((group for group in groups if group["method"] == method
                 and (target is None or group["target"] is not None and abs(group["target"] - target) < 1e-9)), None)


def _describe(first: Dict, second: Dict) -> str:
    def text(group: Dict) -> str:
        target = "" if group["target"] is None else f" {group['target']:g}"
        spread = (group["max"]["error"] - group["min"]["error"]) / 2
        return (f"{group['method']}{target} {100 * group['mean']['error']:.1f} ± {100 * spread:.1f} "
                f"(MACs {100 * group['mean']['macs_ratio']:.1f} %, n={len(group['runs'])})")

    return f"{text(first)} vs {text(second)}: {compare(first, second)}"


def _verdict(outcomes: Sequence[str], no_degradation: bool = False) -> str:
    if not outcomes:
        return "not tested"
    if "unmeasured" in outcomes:
        return "not measured (a run has no finite error)"
    if no_degradation:
        return "does not hold" if "worse" in outcomes else "holds"
    if all(outcome == "better" for outcome in outcomes):
        return "holds"
    if "better" in outcomes:
        return "partly"
    return "does not hold" if "worse" in outcomes else "not distinguishable"


def paper_claims(task: str, groups: Sequence[Dict]) -> List[Dict]:
    """The HJ-Pruning paper's claims, each with its ``verdict`` and the ``evidence`` per MAC ratio.

    Claims 1-3 compare HJ-Pruning by MACs (``hj_macs`` at ratio r) with HJ-Pruning by size (the
    ``hj_params`` run aimed at r, :func:`params_target_for_macs`), with separate CNN/Transformer
    budgets (``separate`` r) and with pruning the Transformer alone (``transformer_only`` r).
    Claims 4 and 5 compare it with the dense model (the ``dense`` group): 10-30 % less
    computation (r in [0.7, 0.9]) more accurate, 40-50 % less (r in [0.5, 0.6]) not worse.
    """
    hj_macs = [group for group in groups if group["method"] == "hj_macs"]
    dense = _find(groups, "dense", None)
    name = error_name(task)
    claims = []
    for method, targets, text in (
            ("hj_params", params_target_for_macs, "HJ-Pruning by MACs has a lower {} than HJ-Pruning by size "
                                                  "aimed at the same MACs"),
            ("separate", lambda r: r, "HJ-Pruning by MACs (one joint budget) has a lower {} than separate CNN "
                                      "and Transformer budgets at the same MACs"),
            ("transformer_only", lambda r: r, "HJ-Pruning by MACs has a lower {} than pruning the Transformer "
                                              "alone at the same MACs")):
        evidence, outcomes = [], []
        for group in hj_macs:
            other = _find(groups, method, targets(group["target"]))
            if other is not None:
                outcomes.append(compare(group, other))
                evidence.append(_describe(group, other))
        claims.append(dict(claim=text.format(name), verdict=_verdict(outcomes), evidence=evidence))
    for low, high, no_degradation, text in (
            (0.7, 0.9, False, "10-30 % less computation (HJ-Pruning by MACs) has a lower {} than the dense model"),
            (0.5, 0.6, True, "40-50 % less computation (HJ-Pruning by MACs) has no higher {} than the dense model")):
        evidence, outcomes = [], []
        for group in hj_macs:
            if dense is not None and low - 1e-9 <= group["target"] <= high + 1e-9:
                outcomes.append(compare(group, dense))
                evidence.append(_describe(group, dense))
        claims.append(dict(claim=text.format(name), verdict=_verdict(outcomes, no_degradation), evidence=evidence))
    return claims


def format_claims(task: str, groups: Sequence[Dict], claims: Sequence[Dict]) -> List[str]:
    """Markdown lines: the mean ± spread table (spread: half the seeds' range) and the claims."""
    name = error_name(task)
    lines = ["", f"## Every method over seeds ({name}: mean ± half the range of the seeds)", "",
             f"| method | target | seeds | {name} | min – max | MACs | params | latency |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for group in groups:
        mean, low, high = group["mean"], group["min"], group["max"]
        lines.append(
            f"| {group['method']} | {'–' if group['target'] is None else format(group['target'], '.2f')} | "
            f"{len(group['runs'])} | {100 * mean['error']:.1f} ± {50 * (high['error'] - low['error']):.1f} % | "
            f"{100 * low['error']:.1f} – {100 * high['error']:.1f} % | {100 * mean['macs_ratio']:.1f} % | "
            f"{100 * mean['params_ratio']:.1f} % | {mean['latency_ms']:.1f} ms |")
    lines += ["", "## The paper's claims on this run", "",
              "A difference counts only where the seeds' [min, max] intervals do not overlap.", ""]
    for number, claim in enumerate(claims, 1):
        lines.append(f"{number}. {claim['claim']}: **{claim['verdict']}**")
        lines += [f"   - {line}" for line in claim["evidence"]]
    return lines
