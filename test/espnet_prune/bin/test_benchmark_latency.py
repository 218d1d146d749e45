import pytest
import torch

from espnet_prune.bin import benchmark_latency
from espnet_prune.ssl import latency
from test.espnet_prune.ssl.test_latency import synthetic_table
from test.espnet_prune.ssl.tiny import tiny_config

SECONDS = 0.5


def tiny_run(tmp_path, trainer, align, warmup_steps, reg_lr):
    """``benchmark_latency.run`` on a tiny encoder at 1 thread, target 0.7, with a synthetic table."""
    config = tiny_config("wav2vec2", num_layers=2)
    tables = tmp_path / "tables"
    tables.mkdir()
    latency.save_table(synthetic_table(config, seconds=SECONDS), tables / "encoder_t1.json")
    threads = torch.get_num_threads()
    lines = []
    try:
        results = benchmark_latency.run(config.to_dict(), [1], [0.7], seconds=SECONDS, align=align, rounds=1,
                                        profile_rounds=1, trainer=trainer, warmup_steps=warmup_steps, reg_lr=reg_lr,
                                        tolerance=0.05, work_dir=tmp_path / "work", tables=tables, utterances=2,
                                        progress=lines.append)
    finally:
        torch.set_num_threads(threads)
    assert len(lines) == 1
    return results["threads"]["1"], lines[0]


def check_systems(entry, names):
    assert [system["system"] for system in entry["systems"]] == names
    for system in entry["systems"]:
        assert 0 < system["latency_ratio_median"] and 0 < system["macs_ratio"] <= 1
        assert ("within_tolerance" in system) == (system["metric"] == "latency")
        if system["align"] == 8:
            assert all(c % 8 == 0 for c in system["conv"]) and all(f % 8 == 0 for f in system["ffn"])


def test_budget_alone_prunes_both_metrics_with_and_without_align_and_times_them_against_dense(tmp_path):
    entry, table = tiny_run(tmp_path, "none", align=8, warmup_steps=2, reg_lr=0.1)
    check_systems(entry, ["latency0.7", "latency0.7_align8", "macs0.7", "macs0.7_align8", "half (calibration)"])
    assert "latency0.7_align8" in table


@pytest.mark.slow
def test_espnet_trainer_path_trains_exports_and_times_each_budget(tmp_path):
    """Through asr_train (launcher) and export: each budget reaches its target in the export report,
    and the timed compact encoder is the exported structure (its ratio in the budget's metric)."""
    entry, table = tiny_run(tmp_path, "espnet", align=1, warmup_steps=20, reg_lr=1.0)
    check_systems(entry, ["latency0.7", "macs0.7", "half (calibration)"])
    work = tmp_path / "work" / "espnet"
    assert sorted(path.name for path in work.iterdir() if (path / "exported").is_dir()) == ["latency0.7_t1", "macs0.7"]
    for system in entry["systems"][:2]:
        assert system["budget_reached"] is True, system
        assert abs(system["exported_budget_ratio"] - 0.7) <= 0.02, system
        own = system["predicted_latency_ratio"] if system["metric"] == "latency" else system["macs_ratio"]
        assert abs(own - system["exported_budget_ratio"]) <= 1e-6, system
    log = (work / "latency0.7_t1" / "exp.log").read_text(encoding="utf-8")
    assert "pruning budget 'total' (latency) reached" in log
    assert "macs0.7" in table
