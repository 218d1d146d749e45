"""``make bench-gpu`` runs: the whole benchmark at tiny size on CPU (the GPU run differs only in ``--device``)."""

import json

import pytest

from espnet_prune.bin import benchmark_gpu


@pytest.mark.slow  # the whole benchmark: 3 x 2 frontends x 2 dtypes x 2 batches, 3 decode shapes, 3 trainings
def test_tiny_benchmark_on_cpu_writes_every_table(tmp_path):
    benchmark_gpu.main(["--device", "cpu", "--size", "tiny", "--output_dir", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    frontend = results["frontend"]
    assert {(row["model"], row["dtype"], row["batch"]) for row in frontend} == {
        (model, dtype, batch) for model in ("dense", "compact_0.7", "compact_0.5")
        for dtype in ("float32", "bfloat16") for batch in (1, 2)}
    ratios = {row["model"]: row["macs_ratio"] for row in frontend}
    assert ratios["dense"] == 1.0 and ratios["compact_0.5"] < ratios["compact_0.7"] < 1.0
    for row in frontend:
        if not row["ms"] > 0.0:
            pytest.fail(f"latency {row}")
    assert set(results["decode"]) == {"ctc", "transformer_decoder", "conformer"}
    for decode in results["decode"].values():
        assert decode["device"] == "cpu" and decode["systems"]["dense"]["tokens"] == 4
    training = results["training"]
    expected = training["pruned_ms"] / training["plain_ms"]
    if not abs(training["pruned_over_plain"] - expected) <= 1e-9:
        pytest.fail(f"pruned/plain {training['pruned_over_plain']} != {expected}")
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "| compact_0.5 |" in table and "Whole decode, `conformer`" in table and "ESPnet `s3prl`" in table


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(benchmark_gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cuda: torch sees no GPU"):
        benchmark_gpu.main(["--device", "cuda", "--output_dir", str(tmp_path)])
