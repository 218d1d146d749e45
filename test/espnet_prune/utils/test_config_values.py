"""Configuration values as PyYAML delivers them: numbers it leaves as strings are numbers, every
other wrong type is refused by name."""

import math
from typing import List, Optional, Union

import pytest
import yaml

from espnet_prune.utils.config_values import boolean, describe, number, typed, whole_number, yaml_mangled_number


@pytest.mark.parametrize("written", ["1e-5", "1e-05", "5e3", "1.0e5", "+1E5", "-2e-2", ".5e1"])
def test_numbers_pyyaml_leaves_as_strings_are_the_numbers_they_spell(written):
    value = yaml.safe_load(f"key: {written}")["key"]
    assert isinstance(value, str)  # what ESPnet's config loading hands over
    assert number("arch.key", value) == float(written)
    assert yaml_mangled_number(value) == float(written)


@pytest.mark.parametrize("written", ["0.1", "10", "1.0e-5", ".5"])
def test_numbers_pyyaml_does_read_are_not_mangled_so_quoted_ones_are_refused(written):
    assert not isinstance(yaml.safe_load(f"key: {written}")["key"], str)
    quoted = yaml.safe_load(f"key: '{written}'")["key"]
    assert yaml_mangled_number(quoted) is None
    with pytest.raises(ValueError, match=rf"^arch\.key must be a number, got str '{written}' \(a quoted number is a "
                                         r"string: remove the quotes\)$"):
        number("arch.key", quoted)


@pytest.mark.parametrize("value, shown", [("small", "str 'small'"), (True, "bool True"), (None, "NoneType None"),
                                          (float("nan"), "float nan"), (math.inf, "float inf"), ("nan", "str 'nan'"),
                                          ([0.1], r"list \[0\.1\]")])
def test_other_values_are_refused_naming_key_value_and_type(value, shown):
    with pytest.raises(ValueError, match=rf"^pruning\.reg_lr must be a number, got {shown}$"):
        number("pruning.reg_lr", value)


def test_whole_numbers():
    assert whole_number("k", 10) == 10 and whole_number("k", 10.0) == 10 and whole_number("k", "5e3") == 5000
    assert isinstance(whole_number("k", "5e3"), int) and isinstance(whole_number("k", 10.0), int)
    for bad, shown in ((2.5, "float 2.5"), ("1e-5", "str '1e-5'"), (True, "bool True"), ("10", "str '10'"),
                       (math.inf, "float inf")):
        with pytest.raises(ValueError, match=rf"^k must be a whole number of steps, got {shown}"):
            whole_number("k", bad, "a whole number of steps")


def test_booleans_are_only_yaml_booleans():
    assert boolean("arch.conv_bias", yaml.safe_load("k: yes")["k"]) is True
    for bad in ("true", 1, 0, None):
        with pytest.raises(ValueError, match=r"^arch\.conv_bias must be true or false, got "):
            boolean("arch.conv_bias", bad)


def test_typed_follows_the_declared_type_and_names_the_entry():
    per_layer = Union[int, List[int]]
    assert typed("arch.num_heads", 4, per_layer) == 4
    assert typed("arch.num_heads", (4, "8e0"), per_layer) == [4, 8]
    assert typed("arch.head_dim", None, Optional[int]) is None
    assert typed("arch.kept_heads", [[0, 2.0]], Optional[List[List[int]]]) == [[0, 2]]
    assert typed("arch.layer_norm_eps", "1e-5", float) == 1e-5
    assert typed("arch.model_type", "wavlm", str) == "wavlm"
    with pytest.raises(ValueError, match=r"^arch\.num_heads must be a whole number or a list of whole numbers, "
                                         r"got str 'four'$"):
        typed("arch.num_heads", "four", per_layer)
    with pytest.raises(ValueError, match=r"^arch\.use_ffn\[1\] must be true or false, got str 'false'$"):
        typed("arch.use_ffn", [True, "false"], Union[bool, List[bool]])
    with pytest.raises(ValueError, match=r"^arch\.conv_layers\[0\]\[2\] must be a whole number, got float 5\.5$"):
        typed("arch.conv_layers", [[32, 10, 5.5]], List[List[int]])
    with pytest.raises(ValueError, match=r"^arch\.conv_layers must be a list of lists of whole numbers, got int 3$"):
        typed("arch.conv_layers", 3, List[List[int]])
    with pytest.raises(ValueError, match=r"^arch\.model_type must be a string, got int 2$"):
        typed("arch.model_type", 2, str)
    with pytest.raises(ValueError, match=r"^arch\.head_dim must be a whole number or null, got str 'x'$"):
        typed("arch.head_dim", "x", Optional[int])


def test_describe():
    assert describe(Optional[List[List[int]]]) == "a list of lists of whole numbers or null"
    assert describe(Union[bool, List[bool]]) == "true or false or a list of booleans"
