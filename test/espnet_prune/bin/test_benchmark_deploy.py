"""benchmark_deploy on a tiny architecture, one round: every row of the table, its facts, the
fastest variant and the profile."""

import json

import pytest

from espnet_prune.bin import benchmark_deploy
from test.espnet_prune.ssl.tiny import tiny_config

ARCH = json.dumps(tiny_config().to_dict())


@pytest.mark.slow  # builds, exports, quantizes and times every deployment variant
def test_one_round_prints_every_variant(tmp_path, capsys):
    rows, profiles = benchmark_deploy.main([
        "--arch", ARCH, "--seconds", "1", "--targets", "0.5", "--threads", "1,2", "--rounds", "1", "--warmup", "0",
        "--calibration", "synth:2", "--profile", "--json", str(tmp_path / "rows.json"),
        "--workdir", str(tmp_path / "models")])
    out = capsys.readouterr().out
    assert len(rows) == 2 * 2 * len(benchmark_deploy.BACKENDS)
    assert json.loads((tmp_path / "rows.json").read_text()) == {"rows": rows, "profiles": profiles}
    assert out.count("\n| ") == len(rows) + 2  # after the machine line: header, rule, rows
    for backend in benchmark_deploy.BACKENDS:
        assert f"| compact 50% | {backend} | 2 |" in out
    by_key = {(row["model"], row["backend"], row["threads"]): row for row in rows}
    dense, compact = by_key["dense", "torch", 1], by_key["compact 50%", "torch", 1]
    assert dense["speedup"] == 1.0 and dense["mac_cut"] == 1.0 and dense["ok"]
    assert abs(compact["macs_ratio"] - 0.5) < 0.1 and compact["params"] < dense["params"]
    assert compact["speedup_over_mac_cut"] == pytest.approx(compact["speedup"] / compact["mac_cut"])
    assert by_key["dense", "torch-int8", 1]["size"] < dense["size"]
    assert by_key["dense", "onnx-int8", 1]["size"] < by_key["dense", "onnx", 1]["size"]
    assert by_key["dense", "onnx-int8-static", 1]["size"] < by_key["dense", "onnx", 1]["size"]
    for row in rows:
        assert row["latency_ms"] > 0 and row["rtf"] == pytest.approx(row["latency_ms"] / 1000)
        assert row["ok"] == (row["rel_diff"] <= benchmark_deploy.INT8_TOLERANCE)
    assert (tmp_path / "models" / "model1.int8-static.onnx").is_file()
    # One "fastest" line per model and thread count, naming a variant within the tolerance.
    for key in {(row["model"], row["threads"]) for row in rows}:
        line = next(line for line in out.splitlines() if line.startswith(f"fastest for {key[0]} at {key[1]} "))
        best = line.split(": ", 1)[1].split(" ", 1)[0]
        assert by_key[key[0], best, key[1]]["ok"]
        assert all(f"{backend} " in line for backend in benchmark_deploy.BACKENDS)
    assert [entry["backend"] for entry in profiles] == list(benchmark_deploy.ONNX_BACKENDS)
    for entry in profiles:
        assert entry["model"] == "compact 50%" and entry["total_ms"] > 0
        assert sum(entry["components"].values()) == pytest.approx(entry["total_ms"])
        assert "CNN" in entry["components"] and f"{entry['backend']} at 1 thread(s)" in out
    assert "QLinearConv" in profiles[-1]["operators"]  # the static int8 file runs the CNN in int8


def test_fastest_skips_variants_outside_the_tolerance():
    rows = [dict(model="m", threads=1, backend=backend, latency_ms=ms, rel_diff=diff, ok=ok, speedup=1000 / ms)
            for backend, ms, diff, ok in (("torch", 1000, 0.0, True), ("onnx-int8", 300, 0.2, False),
                                          ("onnx-int8-static", 400, float("nan"), False), ("onnx", 800, 0.0, True))]
    (line,) = benchmark_deploy.fastest(rows)
    assert line.startswith("fastest for m at 1 thread(s): onnx (×1.25")
    assert "onnx-int8 300 ms (features 20.0 % off: excluded)" in line and "nan % off" in line


@pytest.mark.parametrize("args,message", [(["--targets", "1.5"], "--targets"), (["--threads", "0"], "--threads"),
                                          (["--arch", "nope"], "Unknown architecture")])
def test_bad_options_are_rejected(args, message):
    with pytest.raises(SystemExit, match=message):
        benchmark_deploy.main(args)
