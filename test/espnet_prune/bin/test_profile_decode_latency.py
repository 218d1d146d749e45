"""``profile_decode_latency``: the decode latency table of a tiny whole model, measured through
``Speech2Text``, and the budget that prices with it (``benchmark_decode --whole_latency``)."""

import json

import pytest

from espnet_prune.bin import benchmark_decode, profile_decode_latency
from espnet_prune.inference import shapes
from espnet_prune.inference.budget_shapes import budget_pruning, whole_model_train_config
from espnet_prune.pruning import decode_latency
from test.espnet_prune.ssl.tiny import tiny_config

TINY_ARCH = tiny_config().to_dict()
EVERY = ["frontend", "encoder", "decoder", "ctc"]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """The tiny conformer shape's experiment config (1 s, 4 tokens, beam 10) and its table."""
    directory = tmp_path_factory.mktemp("profile")
    pruning = budget_pruning(EVERY, 0.5, 1.0, shapes.DECODE_CONFIGS["conformer"], 4)
    config = whole_model_train_config("conformer", TINY_ARCH, 20, True, pruning)
    path = shapes.write_train_config(config, directory / "exp" / "config.yaml")
    table = directory / "table.json"
    profile_decode_latency.main(["--config", str(path), "--rounds", "2", "--warmup", "0", "--points", "1", "0.5",
                                 "0", "--output", str(table)])
    return path, table


def test_the_profile_times_every_part_from_the_dense_structure_to_the_smallest(profiled, capsys):
    config, path = profiled
    table = decode_latency.load_table(path)
    points = table["points"]
    assert [round(p["target"], 4) for p in points][0] == 1.0 and len(points) == 3
    for part in ("frontend", "encoder", "decoder"):
        gmacs = [p["gmacs"][part] for p in points]
        assert gmacs[0] > gmacs[2] > 0 and gmacs[0] == pytest.approx(table["dense_gmacs"][part])
        assert all(p["ms"][part] > 0 for p in points)
        assert table["fit"][part]["fixed_ms"] >= 0 and table["fit"][part]["ms_per_gmac"] >= 0
    assert all(p["total_ms"] > sum(p["ms"].values()) for p in points)  # CTC and the search outside the parts
    assert table["rest_ms"] > 0 and table["measured_on"]["tokens"] == 4
    assert table["decoding"] == {"beam_size": 10, "tokens_per_second": 4.0, "ctc_weight": 0.3}
    # the model it was measured on accepts it, and prices its dense decode with it
    import yaml
    from espnet2.tasks.asr import ASRTask

    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["model_conf"]["pruning"].update(metric="latency", latency_table=str(path), target=0.99)
    latency_config = config.parent / "latency.yaml"
    latency_config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    model, _ = ASRTask.build_model_from_file(str(latency_config), None, "cpu")
    fits = decode_latency.part_fits(table)
    dense = sum(fits[part][0] + fits[part][1] * table["dense_gmacs"].get(part, 0.0) for part in fits)
    assert model.controller.dense_cost["total"] == pytest.approx(dense)


def test_bad_profile_arguments_are_named(profiled, tmp_path, capsys):
    config, _ = profiled
    with pytest.raises(SystemExit):
        profile_decode_latency.main(["--config", str(tmp_path / "none.yaml"), "--output", str(tmp_path / "t.json")])
    assert "none.yaml does not exist" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    import yaml

    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["model_conf"].pop("pruning")
    plain.write_text(yaml.safe_dump(settings), encoding="utf-8")
    with pytest.raises(SystemExit):
        profile_decode_latency.main(["--config", str(plain), "--output", str(tmp_path / "t.json")])
    assert "has no model_conf.pruning" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        profile_decode_latency.main(["--config", str(config), "--points", "0.5", "1", "--output",
                                     str(tmp_path / "t.json")])
    assert "the first 1.0 (the dense model)" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_a_whole_decode_latency_budget_is_benchmarked_with_its_predicted_cut(profiled, tmp_path):
    """``--whole_latency`` with the shape's table: ``whole_latency_T`` lands on T of the decode
    latency the table predicts. The tiny model's measured fixed costs dwarf its units (and its
    measured slopes are noise), so the test's table prices every part at 1 ms per GMAC: 0.6 is
    reachable whatever this machine measured."""
    _, path = profiled
    table = json.loads(path.read_text(encoding="utf-8"))
    table["rest_ms"] = 0.0
    for fit in table["fit"].values():
        fit.update(fixed_ms=0.0, ms_per_gmac=1.0)
    scaled = tmp_path / "scaled.json"
    decode_latency.save_table(table, scaled)
    benchmark_decode.main(["--shape", "conformer", "--small", "--arch", json.dumps(TINY_ARCH), "--vocabulary", "20",
                           "--seconds", "1", "--tokens", "4", "--rounds", "1", "--warmup", "0", "--targets", "0.5",
                           "--whole_targets", "0.6", "--whole_latency", "--latency_table", str(scaled),
                           "--output_dir", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    rows = results["systems"]
    assert list(rows) == ["dense", "frontend_0.5", "frontend_budget_0.6", "whole_0.6", "whole_latency_0.6"]
    assert rows["whole_latency_0.6"]["tokens"] == 4
    if not abs(1 / rows["whole_latency_0.6"]["predicted_cut"] - 0.6) <= 0.02:
        pytest.fail(f"predicted latency cut {rows['whole_latency_0.6']['predicted_cut']}")
    assert results["decode_latency_table"]["fit"] == table["fit"]
    with pytest.raises(SystemExit, match="--latency_table is the table of --whole_latency"):
        benchmark_decode.main(["--shape", "conformer", "--whole_targets", "0.5", "--latency_table", str(scaled)])
