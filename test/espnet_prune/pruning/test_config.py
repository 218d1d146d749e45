"""PruningConfig: the one source of the ``pruning`` keys, defaults, types and validation."""

import inspect
import re
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.pruning.config import REG_LR_RANGE, PruningConfig
from espnet_prune.pruning.controller import PruningController
from test.espnet_prune.asr.recipe_steps import TINY_ARCH
from test.espnet_prune.ssl.tiny import tiny_config

#: The page that documents every key (the README links it).
YAML_DOC = Path(__file__).parents[3] / "doc" / "yaml.md"


def doc_pruning_table():
    """``{key: default}`` of the table under doc/yaml.md's heading "`pruning` keys" (a row may name several keys)."""
    text = YAML_DOC.read_text(encoding="utf-8")
    section = text.split("\n## `pruning` keys\n", 1)[1]
    rows = {}
    for line in section.splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("key",) or set(cells[0]) <= set("- "):
            continue
        default = cells[1].strip("`")
        if default == "–":
            value = None
        elif re.fullmatch(r"\d+/\d+", default):
            value = float(Fraction(default))
        else:
            value = yaml.safe_load(default)
        for key in re.findall(r"`([a-z0-9_]+)`", cells[0]):
            rows[key] = value
    return rows


def test_doc_pruning_table_lists_exactly_the_dataclass_keys_and_defaults():
    table = doc_pruning_table()
    defaults = PruningConfig.defaults()
    assert sorted(table) == sorted(PruningConfig.keys())
    for key, value in defaults.items():
        assert table[key] == pytest.approx(value) if isinstance(value, float) else table[key] == value, key


def test_doc_frontend_table_lists_exactly_the_constructor_kwargs_and_defaults():
    """The keys of doc/yaml.md's "`frontend_conf` keys" table are PrunedSSLFrontend's keyword arguments (the YAML
    contract), with their defaults."""
    section = YAML_DOC.read_text(encoding="utf-8").split("\n## `frontend_conf` keys\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = yaml.safe_load(cells[1].strip("`"))
    parameters = inspect.signature(PrunedSSLFrontend.__init__).parameters
    defaults = {name: p.default for name, p in parameters.items() if name != "self"}
    assert rows == defaults


def test_defaults_and_round_trip():
    config = PruningConfig.from_dict({"target": 0.5})
    assert config.units == ["conv", "head", "interm"] and config.metric == "macs"
    assert config.warmup_steps == 5000 and config.reg_lr == 0.02 and config.lambda2_lr_scale == 10.0
    assert PruningConfig.from_dict(config.to_dict()) == config
    assert PruningConfig.from_dict({"target": 1, "units": "head", "warmup_steps": 10.0}).units == ["head"]
    assert isinstance(PruningConfig.from_dict({"target": 0.5, "warmup_steps": 10.0}).warmup_steps, int)


def test_numbers_pyyaml_leaves_as_strings_are_numbers():
    """PyYAML (YAML 1.1) reads ``5e-1`` and ``5e3`` as strings; they are the numbers they spell."""
    values = yaml.safe_load("targets: [8e-1, 6e-1]\nreg_lr: 2e-2\nwarmup_steps: 5e3\nhold_steps: 1e3\n"
                            "reference_seconds: 1e1\n")
    assert isinstance(values["reg_lr"], str) and isinstance(values["targets"][0], str)
    config = PruningConfig.from_dict(values)
    assert (config.targets, config.reg_lr, config.warmup_steps, config.hold_steps, config.reference_seconds) == (
        [0.8, 0.6], 0.02, 5000, 1000, 10.0)
    assert type(config.warmup_steps) is int and type(config.hold_steps) is int


def test_reg_lr_range_is_documented_and_its_ends_are_accepted():
    low, high = REG_LR_RANGE
    for value in (low, high, PruningConfig.defaults()["reg_lr"]):
        assert PruningConfig.from_dict({"target": 0.5, "reg_lr": value}).reg_lr == value
    row = next(line for line in YAML_DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `reg_lr` |"))
    assert f"[{low:g}, {high:g}]" in row
    assert f"[{low:g}, {high:g}]" in PruningConfig.__doc__


BAD = [
    ({"target": "half"}, r"frontend_conf\.pruning\.target must be a number, got str 'half'"),
    ({"target": True}, r"frontend_conf\.pruning\.target must be a number, got bool True"),
    ({"target": 0.5, "reference_seconds": "10"}, r"frontend_conf\.pruning\.reference_seconds must be a number"),
    ({"target": 0.5, "temperature": 0}, r"frontend_conf\.pruning\.temperature must be > 0, got 0"),
    ({"target": 0.5, "temperature": -1}, r"frontend_conf\.pruning\.temperature must be > 0, got -1"),
    ({"target": 0.5, "warmup_steps": 2.5}, r"frontend_conf\.pruning\.warmup_steps must be a whole number.*2\.5"),
    ({"target": 0.5, "warmup_steps": True}, r"frontend_conf\.pruning\.warmup_steps must be a whole number"),
    ({"target": 0.5, "units": ["conv", "conv"]}, r"frontend_conf\.pruning\.units names \['conv'\] more than once"),
    ({"target": 0.5, "units": [1]}, r"frontend_conf\.pruning\.units must be a list of unit names"),
    ({"target": 0.5, "metric": "flops"}, r"frontend_conf\.pruning\.metric: Unknown pruning metric"),
    ({"target": 0.5, "init_keep_prob": 1}, r"frontend_conf\.pruning\.init_keep_prob must lie in \(0, 1\)"),
    ({"target": 0.5, "reg_lr": "fast"}, r"frontend_conf\.pruning\.reg_lr must be a number"),
    ({"target": float("nan")}, r"frontend_conf\.pruning\.target must be a number"),
    ({"cnn_target": "0.5"}, r"frontend_conf\.pruning\.cnn_target must be a number"),
    ({"target": 0.5, "reg_lr": 1e9}, r"frontend_conf\.pruning\.reg_lr must lie in \[0\.0001, 1\], got 1e\+09"),
    ({"target": 0.5, "reg_lr": "2e1"}, r"frontend_conf\.pruning\.reg_lr must lie in \[0\.0001, 1\], got 20"),
    ({"target": 0.5, "reg_lr": 5e-5}, r"frontend_conf\.pruning\.reg_lr must lie in \[0\.0001, 1\], got 5e-05"),
    ({"target": 0.5, "warmup_steps": "1e-1"}, r"frontend_conf\.pruning\.warmup_steps must be a whole number of "
                                              r"steps, got str '1e-1'"),
]


@pytest.mark.parametrize("pruning, message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_name_their_key_before_the_encoder_is_built(pruning, message):
    with pytest.raises(ValueError, match=message):
        PrunedSSLFrontend(arch=TINY_ARCH, pruning=pruning)
    # The checks run before any checkpoint is read.
    with pytest.raises(ValueError, match=message):
        PrunedSSLFrontend(checkpoint="/nonexistent/wav2vec_small.pt", pruning=pruning)


def test_the_controller_owns_the_config():
    config = PruningConfig.from_dict({"target": 0.9, "warmup_steps": 7, "units": ["head"]})
    controller = PruningController(tiny_config(), config)
    assert controller.pruning is config and controller.warmup_steps == 7 and controller.budgets == {"total": 0.9}
    assert set(controller.gates) == {"head"}
    with pytest.raises(TypeError, match="not both"):
        PruningController(tiny_config(), config, target=0.5)
    with pytest.raises(ValueError, match=r"pruning\.temperature must be > 0"):
        PruningController(tiny_config(), target=0.5, temperature=0)
    with pytest.raises(ValueError, match=r"Unknown key.*taget"):
        PruningController(tiny_config(), taget=0.5)
