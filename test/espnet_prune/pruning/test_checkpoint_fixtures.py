"""Checkpoints written by an earlier version load, resume and export exactly as they did then.

The fixtures (``fixtures/*.pth``, ``fixtures/*.json``, written by ``fixtures/make_checkpoints.py``
at commit deaa99f, before the controller was split along its seams) pin the state-dict keys of a
pruning ``pruned_ssl`` frontend and of a ``pruned_espnet`` model (one size; several sizes with
their snapshots), the controller state and statistics of a resumed run, every report, and the
compact weights export makes of each size. Floats that the code computes compare to within
rounding (another CPU may round a vectorised sum differently); keys, strings, shapes and the
compact weights' bytes compare exactly.
"""

import json
from pathlib import Path

import pytest
import torch

from test.espnet_prune.pruning.fixtures import make_checkpoints as fixtures

HERE = Path(__file__).parent / "fixtures"
CASES = tuple(fixtures.CASES)


def record(case):
    return json.loads((HERE / f"{case}.json").read_text(encoding="utf-8"))


def saved_state(case):
    return torch.load(HERE / f"{case}.pth", map_location="cpu", weights_only=True)


def as_json(value):
    return json.loads(json.dumps(value))


def assert_same(actual, expected, where="value"):
    """``actual`` (as JSON gives it back) equals ``expected``: floats to within 1e-7 relative."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), f"{where}: keys {list(actual)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, rel=1e-7, abs=1e-12), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected and type(actual) is type(expected), f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", CASES)
def test_the_state_dict_keys_are_those_of_the_fixture(case):
    model = fixtures.build(case)
    expected = record(case)
    assert list(model.state_dict()) == expected["keys"]
    assert list(model.frontend.state_dict()) == expected["frontend_keys"]
    assert list(saved_state(case)) == expected["keys"]


@pytest.mark.parametrize("case", CASES)
def test_a_pruned_espnet_model_holds_the_frontend_keys_of_the_fixture(case):
    from test.espnet_prune.asr.recipe_steps import training_config
    from test.espnet_prune.asr.test_pruned_ssl_frontend import build_asr_model

    config = training_config(fixtures.CASES[case])
    config["frontend_conf"]["arch"] = fixtures.ARCH
    model = build_asr_model(config)
    snapshots = model.frontend.controller.snapshots
    if snapshots is not None:
        snapshots.allocate(model)
    keys = list(model.state_dict())
    snapshot = "frontend.controller.size_snapshots.size0.model."
    frontend = [key for key in keys if key.startswith("frontend.") and not key.startswith(snapshot)]
    assert frontend == [f"frontend.{key}" for key in record(case)["frontend_keys"] if ".model." not in key]
    if snapshots is not None:  # the snapshot holds the whole model, itself excepted
        assert [key[len(snapshot):] for key in keys if key.startswith(snapshot)] == [
            key for key in keys if "size_snapshots" not in key]


@pytest.mark.parametrize("case", CASES)
def test_a_fixture_checkpoint_resumes_as_it_did(case):
    expected = record(case)
    model = fixtures.build(case)
    model.load_state_dict(saved_state(case))  # strict, as ESPnet's --resume loads it
    assert_same(as_json(fixtures.reports(model)), expected["reports_at_save"], "reports at save")
    stats = fixtures.train_steps(model, fixtures.RESUMED_STEPS, seed=3)
    assert_same(as_json(stats), expected["resumed_stats"], "resumed stats")
    assert_same(as_json(fixtures.controller_state(model)), expected["controller_state_after_resume"],
                "controller state")
    assert_same(as_json(fixtures.reports(model)), expected["reports_after_resume"], "reports after resume")


@pytest.mark.parametrize("case", CASES)
def test_a_fixture_checkpoint_exports_to_identical_compact_weights(case):
    expected = record(case)
    state = saved_state(case)
    for size, export in zip(fixtures.sizes_of(case), expected["exports"]):
        compact, report = fixtures.export_size(state, case, size)
        assert fixtures.tensor_digests(compact) == export["compact_state"], f"size {size}"
        diff = report.pop("max_abs_diff")  # gated against compact features on the probe
        if not diff <= 1e-5:
            pytest.fail(f"size {size}: the compact frontend differs from the gated one by {diff}")
        assert_same(as_json(report), {k: v for k, v in export.items() if k not in ("compact_state", "max_abs_diff")},
                    f"export of size {size}")
