import torch

from espnet_prune.bin import benchmark_latency
from espnet_prune.ssl import latency
from test.espnet_prune.ssl.test_latency import synthetic_table
from test.espnet_prune.ssl.tiny import tiny_config


def test_run_with_a_table_prunes_both_metrics_with_and_without_align_and_times_them_against_dense(tmp_path):
    config = tiny_config("wav2vec2", num_layers=2)
    arch = config.to_dict()
    tables = tmp_path / "tables"
    tables.mkdir()
    latency.save_table(synthetic_table(config, seconds=0.5), tables / "encoder_t1.json")
    threads = torch.get_num_threads()
    lines = []
    try:
        results = benchmark_latency.run(arch, [1], [0.7], seconds=0.5, align=8, rounds=1, profile_rounds=1,
                                        steps=3, warmup_steps=2, reg_lr=0.1, tolerance=0.05, work_dir=tmp_path,
                                        tables=tables, progress=lines.append)
    finally:
        torch.set_num_threads(threads)
    entry = results["threads"]["1"]
    names = [system["system"] for system in entry["systems"]]
    assert names == ["latency0.7", "latency0.7_align8", "macs0.7", "macs0.7_align8", "half (calibration)"]
    for system in entry["systems"]:
        assert 0 < system["latency_ratio_median"] and 0 < system["macs_ratio"] <= 1
        assert ("within_tolerance" in system) == (system["metric"] == "latency")
        if system["align"] == 8:
            assert all(c % 8 == 0 for c in system["conv"]) and all(f % 8 == 0 for f in system["ffn"])
    assert len(lines) == 1 and "latency0.7_align8" in lines[0]
