"""The paper's comparison: runs grouped over seeds, differences counted only beyond the seeds'
spread, and a verdict per claim."""

import pytest

from espnet_prune.demo.claims import compare, format_claims, group_runs, paper_claims


def _run(name, method, target, wer, macs_ratio, seed=0, intent_acc=None):
    entry = dict(name=name, method=method, target=target, seed=seed, wer=wer, macs_ratio=macs_ratio,
                 params_ratio=macs_ratio, latency_ms=10 * macs_ratio)
    if intent_acc is not None:
        entry["intent_acc"] = intent_acc
    return entry


def _seeds(method, target, wers, macs_ratio):
    return [_run(f"{method}_{target}_seed{seed}", method, target, wer, macs_ratio, seed)
            for seed, wer in enumerate(wers)]


def test_runs_are_grouped_by_method_and_target_with_mean_min_and_max():
    systems = (_seeds("dense", None, [0.20, 0.24, 0.22], 1.0) + _seeds("hj_macs", 0.7, [0.30, 0.26], 0.69)
               + [dict(_run("multi/target0.80", "hj_macs_multi", 0.8, 0.1, 0.8), system_name="multi")])
    dense, macs = group_runs("asr", systems)
    assert dense["method"] == "dense" and dense["seeds"] == [0, 1, 2]
    assert dense["mean"]["error"] == pytest.approx(0.22) and dense["min"]["error"] == 0.20
    assert dense["max"]["error"] == 0.24
    assert macs["target"] == 0.7 and macs["mean"]["macs_ratio"] == pytest.approx(0.69)
    assert [run["error"] for run in macs["runs"]] == [0.30, 0.26]
    # SLU: the error is 1 - intent accuracy, so that lower is better for both tasks.
    (slu,) = group_runs("slu", [_run("dense", "dense", None, 0.5, 1.0, intent_acc=0.8)])
    assert slu["mean"]["error"] == pytest.approx(0.2)


def test_a_difference_counts_only_beyond_the_seeds_spread():
    (low,) = group_runs("asr", _seeds("hj_macs", 0.5, [0.20, 0.22], 0.5))
    (high,) = group_runs("asr", _seeds("separate", 0.5, [0.23, 0.30], 0.5))
    (near,) = group_runs("asr", _seeds("hj_params", 0.6, [0.215, 0.40], 0.5))
    assert compare(low, high) == "better" and compare(high, low) == "worse"
    assert compare(low, near) == "overlap"  # 0.22 > 0.215: the intervals overlap, however far the means


def test_a_run_without_a_finite_error_gives_no_verdict():
    (good,) = group_runs("asr", _seeds("hj_macs", 0.5, [0.20, 0.22], 0.5))
    (broken,) = group_runs("asr", _seeds("separate", 0.5, [0.30, float("nan")], 0.5))
    assert compare(good, broken) == "unmeasured" and compare(broken, good) == "unmeasured"
    dense = _seeds("dense", None, [0.20, 0.21], 1.0)
    claims = paper_claims("asr", group_runs("asr", dense + _seeds("hj_macs", 0.5, [0.20, float("nan")], 0.5)))
    assert claims[4]["verdict"].startswith("not measured")


def test_each_claim_gets_a_verdict_from_every_ratio_both_sides_have():
    systems = (_seeds("dense", None, [0.20, 0.21, 0.22], 1.0)
               + _seeds("hj_macs", 0.9, [0.18, 0.19], 0.9) + _seeds("hj_macs", 0.7, [0.25, 0.26], 0.7)
               + _seeds("hj_macs", 0.5, [0.22, 0.24], 0.5)
               + _seeds("hj_params", 0.92, [0.185, 0.30], 0.88) + _seeds("hj_params", 0.76, [0.20, 0.30], 0.66)
               + _seeds("hj_params", 0.6, [0.23, 0.35], 0.5)
               + _seeds("separate", 0.9, [0.50, 0.60], 0.9) + _seeds("separate", 0.7, [0.40, 0.45], 0.7)
               + _seeds("separate", 0.5, [0.70, 0.80], 0.5)
               + _seeds("transformer_only", 0.9, [0.10, 0.12], 0.9))
    claims = paper_claims("asr", group_runs("asr", systems))
    verdicts = [claim["verdict"] for claim in claims]
    # size: overlaps at every ratio; separate: better everywhere; Transformer-only: worse at its only ratio;
    # 10-30 % less: better at 0.9, worse at 0.7; 40-50 % less: 0.22-0.24 overlaps dense's 0.20-0.22.
    assert verdicts == ["not distinguishable", "holds", "does not hold", "partly", "holds"]
    assert len(claims[1]["evidence"]) == 3 and len(claims[2]["evidence"]) == 1 and len(claims[3]["evidence"]) == 2
    assert claims[0]["evidence"][0].startswith("hj_macs 0.9 18.5 ± 0.5 (MACs 90.0 %, n=2) vs hj_params 0.92")
    assert "WER" in claims[0]["claim"]
    worse_dense = _seeds("dense", None, [0.10, 0.11], 1.0) + _seeds("hj_macs", 0.5, [0.22, 0.24], 0.5)
    assert paper_claims("asr", group_runs("asr", worse_dense))[4]["verdict"] == "does not hold"
    assert [claim["verdict"] for claim in paper_claims("asr", group_runs("asr", _seeds("dense", None, [0.2], 1)))] \
        == ["not tested"] * 5
    lines = format_claims("asr", group_runs("asr", systems), claims)
    assert "| dense | – | 3 | 21.0 ± 1.0 % | 20.0 – 22.0 % | 100.0 % | 100.0 % | 10.0 ms |" in lines
    assert any(line.startswith("2. HJ-Pruning by MACs (one joint budget)") and line.endswith("**holds**")
               for line in lines)
