"""``benchmark_decode``: its arithmetic on given times, the frontend clock, and whole runs on tiny models."""

import json
import time

import numpy as np
import pytest
import torch

from espnet_prune.bin import benchmark_decode
from espnet_prune.inference import shapes
from espnet_prune.inference.decode_timing import FrontendClock, markdown_table, read_decode_config, summarize
from espnet_prune.utils.kaldi_data import Utterance, write_data_dir
from test.espnet_prune.ssl.tiny import tiny_config

TINY_ARCH = json.dumps(tiny_config().to_dict())


def test_summarize_on_known_times():
    times = {"dense": {"decode_s": 2.0, "frontend_s": 0.5}, "pruned": {"decode_s": 1.6, "frontend_s": 0.25},
             "other": {"decode_s": 4.0, "frontend_s": 1.0}}
    rows = summarize(times, {"dense": 10e9, "pruned": 5e9, "other": None}, audio_seconds=4.0, reference="dense")
    dense, pruned, other = rows["dense"], rows["pruned"], rows["other"]
    expected = dict(decode_ms=1600.0, frontend_ms=250.0, rtf=0.4, speedup=1.25, frontend_share=0.15625,
                    frontend_speedup=2.0, macs=5e9, mac_cut=2.0, speedup_over_mac_cut=0.625)
    for key, value in expected.items():
        if not abs(pruned[key] - value) <= 1e-9 * max(1.0, abs(value)):
            pytest.fail(f"{key}: {pruned[key]} != {value}")
    assert dense["speedup"] == 1.0 and dense["mac_cut"] == 1.0 and dense["frontend_share"] == 0.25
    assert other["speedup"] == 0.5 and other["mac_cut"] is None and other["speedup_over_mac_cut"] is None
    table = markdown_table(rows, "dense")
    assert "| pruned | 1600 ms | 0.400 | ×1.25 | 16 % | ×2.00 | ×2.00 | 0.62 |" in table
    with pytest.raises(ValueError, match="reference system 'x'"):
        summarize(times, {}, 4.0, "x")


def test_identical_fraction_counts_equal_hypotheses_in_order():
    assert benchmark_decode.identical_fraction(["a b", "c", ""], ["a b", "c d", ""]) == 2 / 3
    assert benchmark_decode.identical_fraction(["x"], ["x"]) == 1.0
    assert benchmark_decode.identical_fraction(["a", "b"], ["b", "a"]) == 0.0
    with pytest.raises(ValueError, match="equally long"):
        benchmark_decode.identical_fraction(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="non-empty"):
        benchmark_decode.identical_fraction([], [])
    rows = {"a": dict(decode_ms=2.0, frontend_ms=1.0, rtf=0.1, speedup=1.0, frontend_share=0.5, frontend_speedup=1.0,
                      macs=None, mac_cut=None, speedup_over_mac_cut=None)}
    rows["a_onnx_static"] = dict(rows["a"], identical=0.96, feature_rel_l2=0.0251)
    table = markdown_table(rows, "a")
    assert "| identical hyps vs PyTorch | features rel. L2 |" in table
    assert table.splitlines()[-1].endswith("| 96.0% | 2.51% |") and table.splitlines()[-2].endswith("| – | – |")


def test_frontend_clock_adds_up_forward_time_and_leaves_outputs_alone():
    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.02)
            return x * 2

    module = Slow()
    clock = FrontendClock(module)
    x = torch.ones(3)
    assert torch.equal(module(x), x * 2)
    module(x)
    assert 0.04 <= clock.seconds < 10.0
    clock.close()
    module(x)
    assert clock.seconds < 10.0 and not module._forward_hooks and not module._forward_pre_hooks


def test_decode_config_refuses_unknown_keys(tmp_path):
    path = tmp_path / "decode.yaml"
    path.write_text("beam_size: 4\nbeam: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"decode.yaml: keys \['beam'\]"):
        read_decode_config(path)
    assert read_decode_config(None, {"beam_size": 2}) == {"beam_size": 2}


@pytest.mark.parametrize("shape", ["ctc", "conformer"])
def test_random_shape_run_decodes_the_same_number_of_tokens(shape, tmp_path):
    benchmark_decode.main(["--shape", shape, "--small", "--arch", TINY_ARCH, "--vocabulary", "20", "--seconds", "1",
                           "--tokens", "4", "--rounds", "1", "--warmup", "0", "--targets", "0.5",
                           "--output_dir", str(tmp_path)] + (["--best_path"] if shape == "ctc" else []))
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    rows = results["systems"]
    expected = ["dense", "frontend_0.5"] if shape == "conformer" else [
        "dense", "dense_best_path", "frontend_0.5", "frontend_0.5_best_path"]
    assert list(rows) == expected
    assert rows["dense"]["tokens"] == rows["frontend_0.5"]["tokens"] == 4
    assert results["decode_config"]["maxlenratio"] == -4.0 and results["decode_config"]["minlenratio"] == -3.0
    assert 1.0 < rows["frontend_0.5"]["mac_cut"] <= 2.5
    for name, row in rows.items():
        reference = "dense_best_path" if name.endswith("_best_path") else "dense"
        speedup = rows[reference]["decode_ms"] / row["decode_ms"]
        if not abs(row["speedup"] - speedup) <= 1e-9:
            pytest.fail(f"speed-up {row['speedup']} != {speedup}")
        if not 0.0 < row["frontend_share"] < 1.0:
            pytest.fail(f"frontend share {row['frontend_share']}")
    if shape == "ctc":
        over_beam = rows["frontend_0.5"]["decode_ms"] / rows["frontend_0.5_best_path"]["decode_ms"]
        if not abs(rows["frontend_0.5_best_path"]["speedup_over_beam"] - over_beam) <= 1e-9:
            pytest.fail(f"best path over beam {rows['frontend_0.5_best_path']['speedup_over_beam']} != {over_beam}")
    assert (tmp_path / "results.md").read_text(encoding="utf-8").startswith("| system | decode |")


def test_trained_experiments_are_decoded_and_scored(tmp_path):
    from espnet2.tasks.asr import ASRTask

    config = shapes.train_config("ctc", tiny_config().to_dict(), vocabulary=12, small=True)
    train_config = shapes.write_train_config(config, tmp_path / "exp" / "config.yaml")
    model, _ = ASRTask.build_model_from_file(str(train_config), None, "cpu")
    torch.save(model.state_dict(), tmp_path / "exp" / "valid.acc.ave.pth")
    rng = np.random.default_rng(0)
    data = write_data_dir(tmp_path / "data", [Utterance(f"s-{i}", "s", 0.3 * rng.standard_normal(3000).clip(-3, 3) / 3,
                                                        "w2 w3") for i in range(2)])
    benchmark_decode.main(["--system", f"a={tmp_path / 'exp'}", "--system",
                           f"b={tmp_path / 'exp' / 'valid.acc.ave.pth'}", "--data_dir", str(data), "--decode_arg",
                           "beam_size=1", "--decode_arg", "ctc_weight=1.0", "--rounds", "1", "--warmup", "0",
                           "--output_dir", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    a, b = results["systems"]["a"], results["systems"]["b"]
    assert results["utterances"] == 2 and results["task"] == "asr"
    assert a["wer"] == b["wer"] and 0.0 <= a["wer"] and a["mac_cut"] == b["mac_cut"] == 1.0
    with pytest.raises(SystemExit, match="no valid.acc.ave.pth and 0"):
        benchmark_decode.main(["--system", f"a={tmp_path}", "--rounds", "1"])

    # The frontend in onnxruntime: fp32 decodes what PyTorch decodes; static int8 is compared with it.
    benchmark_decode.main(["--system", f"a={tmp_path / 'exp'}", "--data_dir", str(data), "--decode_arg",
                           "beam_size=1", "--decode_arg", "ctc_weight=1.0", "--rounds", "1", "--warmup", "0",
                           "--onnx", "fp32", "--onnx", "static", "--calibration", "synth:2",
                           "--output_dir", str(tmp_path / "onnx")])
    rows = json.loads((tmp_path / "onnx" / "results.json").read_text(encoding="utf-8"))["systems"]
    assert list(rows) == ["a", "a_onnx_fp32", "a_onnx_static"]
    fp32, static = rows["a_onnx_fp32"], rows["a_onnx_static"]
    assert fp32["onnx_of"] == static["onnx_of"] == "a" and "identical" not in rows["a"]
    assert fp32["identical"] == 1.0 and fp32["wer"] == rows["a"]["wer"]
    if not fp32["feature_rel_l2"] <= 1e-4:
        pytest.fail(f"ONNX fp32 features {fp32['feature_rel_l2']} from PyTorch's")
    if not 0.0 < static["feature_rel_l2"] <= 0.5:
        pytest.fail(f"static int8 features {static['feature_rel_l2']} from PyTorch's")
    assert static["identical"] in (0.0, 0.5, 1.0)
    with pytest.raises(SystemExit, match="--calibration nowhere.scp is neither"):
        benchmark_decode.main(["--system", f"a={tmp_path / 'exp'}", "--onnx", "static", "--calibration",
                               "nowhere.scp"])
    with pytest.raises(SystemExit, match="--onnx decodes trained --system"):
        benchmark_decode.main(["--shape", "ctc", "--onnx", "fp32"])

def test_whole_model_budget_systems_decode_with_their_predicted_cut(tmp_path):
    """``--whole_targets``: the structures of a model_conf.pruning budget on the frontend alone and on
    the whole decode, compacted and written as experiments that Speech2Text decodes; the predicted
    cut of the whole decode is 1 / the budget (whole) and between 1 and that (frontend alone)."""
    benchmark_decode.main(["--shape", "conformer", "--small", "--arch", TINY_ARCH, "--vocabulary", "20",
                           "--seconds", "1", "--tokens", "4", "--rounds", "2", "--warmup", "0", "--targets", "0.5",
                           "--whole_targets", "0.6", "--output_dir", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["systems"]
    assert list(rows) == ["dense", "frontend_0.5", "frontend_budget_0.6", "whole_0.6"]
    assert {row["tokens"] for row in rows.values()} == {4}
    if not abs(rows["whole_0.6"]["predicted_cut"] - 1 / 0.6) <= 0.02 / 0.6 ** 2:
        pytest.fail(f"predicted cut {rows['whole_0.6']['predicted_cut']}")
    if not 1.0 < rows["frontend_budget_0.6"]["predicted_cut"] < 1 / 0.6:
        pytest.fail(f"predicted cut {rows['frontend_budget_0.6']['predicted_cut']}")
    for name in ("frontend_budget_0.6", "whole_0.6"):
        ratio = rows[name]["speedup"] / rows[name]["predicted_cut"]
        if not abs(rows[name]["speedup_over_predicted_cut"] - ratio) <= 1e-9:
            pytest.fail(f"{name}: speed-up / predicted cut {rows[name]['speedup_over_predicted_cut']} != {ratio}")
        if not rows[name]["paired_speedup"] > 0:
            pytest.fail(f"{name}: paired speed-up {rows[name]['paired_speedup']}")
