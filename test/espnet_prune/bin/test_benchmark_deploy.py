"""benchmark_deploy on a tiny architecture, one round: every row of the table, and its facts."""

import json

import pytest

from espnet_prune.bin import benchmark_deploy
from test.espnet_prune.ssl.tiny import tiny_config

ARCH = json.dumps(tiny_config().to_dict())


@pytest.mark.slow  # builds, exports and times every deployment variant
def test_one_round_prints_every_variant(tmp_path, capsys):
    rows = benchmark_deploy.main(["--arch", ARCH, "--seconds", "1", "--targets", "0.5", "--threads", "1,2",
                                  "--rounds", "1", "--warmup", "0", "--json", str(tmp_path / "rows.json"),
                                  "--workdir", str(tmp_path / "models")])
    table = capsys.readouterr().out
    assert len(rows) == 2 * 2 * len(benchmark_deploy.BACKENDS)
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    assert table.count("\n| ") == len(rows) + 2  # after the machine line: header, rule, rows
    for backend in benchmark_deploy.BACKENDS:
        assert f"| compact 50% | {backend} | 2 |" in table
    by_key = {(row["model"], row["backend"], row["threads"]): row for row in rows}
    dense, compact = by_key["dense", "torch", 1], by_key["compact 50%", "torch", 1]
    assert dense["speedup"] == 1.0 and dense["mac_cut"] == 1.0
    assert abs(compact["macs_ratio"] - 0.5) < 0.1 and compact["params"] < dense["params"]
    assert compact["speedup_over_mac_cut"] == pytest.approx(compact["speedup"] / compact["mac_cut"])
    assert by_key["dense", "torch-int8", 1]["size"] < dense["size"]
    assert by_key["dense", "onnx-int8", 1]["size"] < by_key["dense", "onnx", 1]["size"]
    for row in rows:
        assert row["latency_ms"] > 0 and row["rtf"] == pytest.approx(row["latency_ms"] / 1000)
    assert (tmp_path / "models" / "model1.int8.onnx").is_file()


@pytest.mark.parametrize("args,message", [(["--targets", "1.5"], "--targets"), (["--threads", "0"], "--threads"),
                                          (["--arch", "nope"], "Unknown architecture")])
def test_bad_options_are_rejected(args, message):
    with pytest.raises(SystemExit, match=message):
        benchmark_deploy.main(args)
