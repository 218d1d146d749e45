import json
import warnings

import numpy as np
import pytest
import torch

from espnet_prune.bin import profile_latency
from espnet_prune.pruning.config import PruningConfig
from espnet_prune.pruning.controller import PruningController
from espnet_prune.ssl import cost, latency
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import prune_encoder, save_compact
from test.espnet_prune.ssl.tiny import tiny_config

SECONDS = 1.0


def synthetic_table(config, seconds=SECONDS, batch=1):
    """A table with made-up, deliberately non-linear times on the grids that ``profile`` uses."""
    pieces = {"cnn": []}
    in_channels = 1
    for index, (out_channels, _, _) in enumerate(config.conv_layers):
        in_grid = [1] if index == 0 else latency._grid(in_channels, 1)
        out_grid = latency._grid(out_channels, 1)
        pieces["cnn"].append({"in": in_grid, "out": out_grid,
                              "ms": [[0.5 + 0.01 * i * o + 0.002 * o ** 1.5 + index for o in out_grid]
                                     for i in in_grid]})
        in_channels = out_channels
    widths = latency._grid(in_channels, 1)
    pieces["projection"] = {"widths": widths, "ms": [0.2 + 0.03 * w for w in widths]}
    heads = latency._head_grid(max(config.num_heads))
    pieces["attention"] = {"widths": heads, "ms": [0.1 + h + 0.3 * h ** 2 for h in heads]}
    units = latency._grid(max(config.ffn_dims), 0)
    pieces["ffn"] = {"widths": units, "ms": [0.05 + 0.2 * f + (3.0 if f % 16 else 0.0) for f in units]}
    pieces["pos_conv"], pieces["fixed"] = 7.0, 2.5
    return {"format": latency.TABLE_FORMAT, "version": latency.TABLE_VERSION, "arch": config.to_dict(),
            "measured_on": {"device": "cpu", "device_name": latency.processor_name(),
                            "threads": torch.get_num_threads(), "dtype": "float32", "batch": batch,
                            "seconds": seconds, "rounds": 1, "clock": "cpu", "torch": torch.__version__,
                            "date": "today"},
            "fit": latency.FIT, "pieces": pieces}


def reference_latency(table, counts):
    """The table's prediction written independently: numpy's interp inside the grids, explicit
    bilinear weights for the CNN (the counts below stay inside every grid)."""
    pieces = table["pieces"]
    total, in_channels = 0.0, 1.0
    for layer, out in zip(pieces["cnn"], counts["conv"]):
        rows = [np.interp(out, layer["out"], row) for row in layer["ms"]]
        total += rows[0] if len(rows) == 1 else np.interp(in_channels, layer["in"], rows)
        in_channels = out
    total += np.interp(counts["conv"][-1], pieces["projection"]["widths"], pieces["projection"]["ms"])
    for heads, a, interm, f in zip(counts["head"], counts["attn_layer"], counts["interm"], counts["ffn_layer"]):
        total += a * np.interp(heads, pieces["attention"]["widths"], pieces["attention"]["ms"])
        total += f * np.interp(interm, pieces["ffn"]["widths"], pieces["ffn"]["ms"])
    return total + pieces["pos_conv"] + pieces["fixed"]


@pytest.fixture
def config():
    return tiny_config("wav2vec2", num_layers=3)


@pytest.fixture
def table_path(config, tmp_path):
    path = tmp_path / "table.json"
    latency.save_table(synthetic_table(config), path)
    return path


def test_prediction_matches_an_independent_interpolation_at_whole_and_fractional_counts(config):
    table = synthetic_table(config)
    for counts in ({"conv": [32, 20, 7, 32, 13, 9, 24], "head": [4, 0, 2], "attn_layer": [1, 1, 0],
                    "interm": [64, 40, 3], "ffn_layer": [1, 0, 1]},
                   {"conv": [30.5, 17.25, 8.0, 31.9, 12.5, 9.75, 23.1], "head": [3.5, 0.2, 2.7],
                    "attn_layer": [0.9, 0.6, 0.1], "interm": [63.2, 40.5, 2.5], "ffn_layer": [0.99, 0.3, 0.7]}):
        predicted = latency.predict_latency(table, config, counts)
        expected = reference_latency(table, counts)
        assert abs(float(predicted["total"]) - expected) <= 1e-9 * expected
    dense = latency.predict_latency(table, config)["total"]
    assert abs(dense - reference_latency(table, cost.structure_counts(config))) <= 1e-9 * dense


def test_expected_latency_under_the_gates_is_differentiable_and_matches_the_numbers(config, table_path):
    controller = PruningController(config, units=["conv", "head", "attn_layer", "interm", "ffn_layer"],
                                   metric="latency", latency_table=str(table_path), target=0.6,
                                   reference_seconds=SECONDS)
    expected = controller.expected_cost()["total"]
    counts = {name: [float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in values]
              for name, values in controller.gates.expected_counts().items()}
    assert abs(float(expected) - reference_latency(controller.latency_table, counts)) <= 1e-6 * float(expected)
    expected.backward()
    grads = [p.grad for p in controller.gates.log_alphas()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # The deterministic (export) structure is priced exactly like the config it exports.
    controller.eval()
    compact = prune_encoder(SSLEncoder(config).eval(), controller()).config
    priced = latency.predict_latency(controller.latency_table, config, controller.deterministic_counts())["total"]
    assert abs(priced - latency.predict_latency(controller.latency_table, compact)["total"]) <= 1e-9 * priced


def test_calibration_maps_the_summed_pieces_through_both_measured_encoders(config):
    table = synthetic_table(config)
    half_counts = cost.structure_counts(latency.half_structure(config))
    summed = [latency.predict_latency(table, config, counts)["total"] for counts in (None, half_counts)]
    table["calibration"] = latency.calibrate(*summed, 100.0, 60.0)
    assert latency.predict_latency(table, config)["total"] == pytest.approx(100.0)
    calibrated = latency.predict_latency(table, config, half_counts)
    assert calibrated["total"] == pytest.approx(60.0)
    assert calibrated["cnn"] == pytest.approx(table["calibration"]["scale"] * reference_cnn(table, half_counts))
    assert latency.calibrate(10.0, 10.0, 5.0, 4.0) == {"scale": 1.0, "offset_ms": 0.0}
    assert latency.calibrate(10.0, 5.0, 4.0, 5.0) == {"scale": 1.0, "offset_ms": 0.0}
    assert latency.half_structure(config).conv_channels == [16] * 7


def reference_cnn(table, counts):
    total, in_channels = 0.0, 1.0
    for layer, out in zip(table["pieces"]["cnn"], counts["conv"]):
        rows = [np.interp(out, layer["out"], row) for row in layer["ms"]]
        total += rows[0] if len(rows) == 1 else np.interp(in_channels, layer["in"], rows)
        in_channels = out
    return total


def test_monotone_fit_is_the_least_squares_non_decreasing_sequence():
    assert latency.monotone([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    assert latency.monotone([5.0, 1.0, 0.0]) == [2.0, 2.0, 2.0]
    assert latency.monotone([0.0, 1.0, 2.0]) == [0.0, 1.0, 2.0]
    fitted = latency.monotone_2d([[1.0, 0.5, 3.0], [0.2, 2.0, 1.0]])
    assert all(a <= b for row in fitted for a, b in zip(row, row[1:]))
    assert all(a <= b for column in zip(*fitted) for a, b in zip(column, column[1:]))


def test_table_file_round_trip_and_format_errors(config, tmp_path, table_path):
    assert latency.load_table(table_path) == json.loads(table_path.read_text())
    with pytest.raises(ValueError, match=r"pruning.latency_table: latency table .*missing.json does not exist"):
        latency.load_table(tmp_path / "missing.json", "pruning.latency_table")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON latency table"):
        latency.load_table(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="is not a latency table"):
        latency.load_table(bad)
    table = synthetic_table(config)
    del table["measured_on"]["batch"], table["pieces"]["ffn"]
    bad.write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"lacks \['measured_on.batch', 'pieces.ffn'\]"):
        latency.load_table(bad)


def test_table_checks_name_architecture_duration_and_batch_and_warn_on_device(config):
    table = synthetic_table(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latency.check_table(table, config, SECONDS, 1) == []
    with pytest.raises(ValueError, match=r"another architecture \(ffn_dims: table \[64, 64, 64\], encoder"):
        latency.check_table(table, config.replace(ffn_dims=48), SECONDS, 1)
    with pytest.raises(ValueError, match=r"measured for 1.0 s utterances but pruning.reference_seconds is 2.0"):
        latency.check_table(table, config, 2.0, 1)
    with pytest.raises(ValueError, match="measured at batch 1 but pruning.latency_batch is 4"):
        latency.check_table(table, config, SECONDS, 4)
    # Dropouts do not change the computation.
    assert latency.check_table(table, config.replace(encoder_dropout=0.3), SECONDS, 1) == []
    table["measured_on"].update(threads=torch.get_num_threads() + 1, device_name="another CPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes = latency.check_table(table, config, SECONDS, 1)
    assert [str(w.message) for w in caught] == notes and len(notes) == 2
    assert "measured on 'another CPU'" in notes[0] and "CPU threads" in notes[1]


def test_pruning_config_latency_keys_are_checked_before_training(config, tmp_path, table_path):
    with pytest.raises(ValueError, match="pruning.metric: latency needs pruning.latency_table"):
        PruningConfig.from_dict({"metric": "latency", "target": 0.5})
    with pytest.raises(ValueError, match="pruning.latency_table: latency table .*nope.json does not exist"):
        PruningConfig.from_dict({"metric": "latency", "target": 0.5, "latency_table": str(tmp_path / "nope.json")})
    for key, value in (("align", 0), ("latency_batch", 1.5)):
        with pytest.raises(ValueError, match=f"pruning.{key}"):
            PruningConfig.from_dict({"target": 0.5, key: value})
    with pytest.raises(ValueError, match="measured for 1.0 s utterances but pruning.reference_seconds is 10.0"):
        PruningController(config, metric="latency", latency_table=str(table_path), target=0.5)


def test_align_is_kept_by_the_deterministic_mask_the_export_and_the_cost(config):
    torch.manual_seed(0)
    controller = PruningController(config, units=["conv", "head", "interm"], target=0.5, align=8)
    with torch.no_grad():
        for gate in controller.gates.log_alphas():
            gate.add_(torch.randn_like(gate) * 3.0 - 1.0)
    controller.eval()
    counts = controller.deterministic_counts()
    assert all(c % 8 == 0 and c >= 8 for c in counts["conv"]), counts["conv"]
    assert all(f % 8 == 0 for f in counts["interm"]), counts["interm"]
    assert counts["conv"] != config.conv_channels or counts["interm"] != config.ffn_dims
    compact = prune_encoder(SSLEncoder(config).eval(), controller()).config
    assert compact.conv_channels == counts["conv"] and compact.ffn_dims == counts["interm"]
    assert cost.count_macs(compact, 10.0)["total"] == pytest.approx(
        float(cost.count_macs(config, 10.0, counts)["total"]))
    # The budget-matching rounding still lands near the expected cost with blocks of 8.
    ratio = controller.deterministic_ratios()["total"]
    assert abs(ratio - float(controller.expected_ratios()["total"])) <= 0.05


def test_profile_latency_cli_writes_a_table_for_a_checkpoint(config, tmp_path, capsys):
    checkpoint, output = tmp_path / "encoder.pth", tmp_path / "out" / "table.json"
    save_compact(SSLEncoder(config).eval(), checkpoint)
    threads = torch.get_num_threads()
    try:
        profile_latency.main(["--checkpoint", str(checkpoint), "--threads", "1", "--seconds", "0.5", "--rounds", "1",
                              "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert "profile_latency: the pieces sum to" in captured.err
    table = latency.load_table(output)
    assert table["measured_on"]["threads"] == 1 and table["measured_on"]["seconds"] == 0.5
    assert table["measured_on"]["clock"] == "cpu"
    assert [len(layer["ms"]) for layer in table["pieces"]["cnn"]] == [1] + [len(latency._grid(32, 1))] * 6
    assert table["pieces"]["attention"]["widths"] == [0, 1, 2, 3, 4]
    latency.check_table(table, config, 0.5, 1)
    dense = latency.predict_latency(table, config)["total"]
    assert dense > 0 and table["check"]["dense_measured_ms"] > 0 and table["calibration"]["scale"] > 0
    for piece in [*table["pieces"]["cnn"], table["pieces"]["ffn"]]:
        assert piece["ms"] == (latency.monotone(piece["measured_ms"]) if "widths" in piece
                               else latency.monotone_2d(piece["measured_ms"]))
    # Monotone pieces: the smallest structure costs no more than the dense one.
    smallest = {"conv": [1] * 7, "head": [0, 0, 0], "interm": [0, 0, 0]}
    assert latency.predict_latency(table, config, smallest)["total"] <= dense


def test_profile_latency_reads_an_architecture_file_and_names_a_bad_one(config, tmp_path, capsys):
    """``--arch FILE.json`` (the ssl_encoder.json beside an extracted encoder, as the demo profiles its
    stand-in) profiles that architecture; a missing or malformed file is a named error."""
    arch, output = tmp_path / "ssl_encoder.json", tmp_path / "table.json"
    arch.write_text(json.dumps(config.to_dict()))
    threads = torch.get_num_threads()
    try:
        profile_latency.main(["--arch", str(arch), "--threads", "1", "--seconds", "0.5", "--rounds", "1",
                              "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    latency.check_table(latency.load_table(output), config, 0.5, 1)
    for content, message in ((None, "does not exist"), ("{", "is not JSON"), ("[1]", "must hold a mapping")):
        bad = tmp_path / "bad.json"
        bad.unlink(missing_ok=True)
        if content is not None:
            bad.write_text(content)
        with pytest.raises(SystemExit):
            profile_latency.main(["--arch", str(bad), "--output", str(tmp_path / "never.json")])
        assert message in capsys.readouterr().err and not (tmp_path / "never.json").exists()
