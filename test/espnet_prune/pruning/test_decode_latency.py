"""The decode latency model: its fit, its table file and the checks against the pruned model."""

import json

import pytest
import torch

from espnet_prune.pruning import decode_latency
from espnet_prune.pruning.parts import PrunablePart
from espnet_prune.pruning.whole_model import FixedPart, WholeModelPart
from espnet_prune.ssl.latency import processor_name

DECODING = {"beam_size": 10, "tokens_per_second": 6.0, "ctc_weight": 0.3}
MEASURED_ON = {"device": "cpu", "device_name": processor_name(), "threads": torch.get_num_threads()}


def test_the_fit_is_the_least_squares_line_and_never_negative():
    fixed, slope = decode_latency.fit_line([1.0, 2.0, 3.0], [12.0, 14.0, 16.0])
    assert (fixed, slope) == pytest.approx((10.0, 2.0))
    # a part that gets slower with fewer MACs is noise: flat at the mean
    assert decode_latency.fit_line([1.0, 2.0], [5.0, 3.0]) == pytest.approx((4.0, 0.0))
    # a negative intercept: the line through the origin
    fixed, slope = decode_latency.fit_line([1.0, 2.0], [1.0, 4.0])
    assert fixed == 0.0 and slope == pytest.approx((1 + 8) / 5)
    with pytest.raises(ValueError, match="as many MAC counts as times"):
        decode_latency.fit_line([1.0], [])


def points():
    """Three structures whose parts follow known lines exactly, with the rest 50 ms."""
    lines = {"frontend": (20.0, 10.0), "encoder": (5.0, 4.0), "decoder": (100.0, 30.0)}
    found = []
    for scale in (1.0, 0.6, 0.3):
        gmacs = {"frontend": 40 * scale, "encoder": 10 * scale, "decoder": 8 * scale}
        ms = {part: lines[part][0] + lines[part][1] * gmacs[part] for part in lines}
        found.append({"target": scale, "gmacs": gmacs, "ms": ms, "total_ms": 50.0 + sum(ms.values())})
    return lines, found


def test_a_table_of_exact_points_recovers_every_part_and_the_rest(tmp_path):
    lines, measured = points()
    table = decode_latency.make_table(measured, MEASURED_ON, DECODING, 5.0)
    for part, (fixed, slope) in lines.items():
        assert (table["fit"][part]["fixed_ms"], table["fit"][part]["ms_per_gmac"]) == pytest.approx((fixed, slope))
    assert table["rest_ms"] == pytest.approx(50.0)
    assert table["max_rel_error"] == pytest.approx(0.0, abs=1e-12)
    path = tmp_path / "t.json"
    decode_latency.save_table(table, path)
    loaded = decode_latency.load_table(path)
    assert decode_latency.part_fits(loaded) == {**{p: pytest.approx(v) for p, v in lines.items()},
                                                "ctc": (pytest.approx(50.0), 0.0)}


def test_bad_tables_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        decode_latency.load_table(tmp_path / "none.json", "model_conf.pruning.latency_table")
    ssl = tmp_path / "ssl.json"
    ssl.write_text(json.dumps({"format": "espnet_prune latency table", "version": 1}))
    with pytest.raises(ValueError, match="is not a decode latency table.*goes in frontend_conf.pruning"):
        decode_latency.load_table(ssl)
    table = decode_latency.make_table(points()[1], MEASURED_ON, DECODING, 5.0)
    dense = dict(table["dense_gmacs"])
    decode_latency.check_table(table, dense, DECODING, 5.0)
    with pytest.raises(ValueError, match="measured for 5.0 s utterances"):
        decode_latency.check_table(table, dense, DECODING, 4.0)
    with pytest.raises(ValueError, match="measured for nan s utterances"):
        decode_latency.check_table({**table, "reference_seconds": float("nan")}, dense, DECODING, 5.0)
    with pytest.raises(ValueError, match="decoding.beam_size 10, the budget is priced for 4"):
        decode_latency.check_table(table, dense, {**DECODING, "beam_size": 4}, 5.0)
    with pytest.raises(ValueError, match="measured on another model: its dense encoder"):
        decode_latency.check_table(table, {**dense, "encoder": 11.0}, DECODING, 5.0)
    table["measured_on"] = {**MEASURED_ON, "device_name": "another cpu"}
    with pytest.warns(UserWarning, match="measured on 'another cpu'"):
        decode_latency.check_table(table, dense, DECODING, 5.0)
    del table["fit"]["decoder"]
    with pytest.raises(ValueError, match="no fit for the decoder part"):
        decode_latency.check_table(table, dense, DECODING, 5.0)


class Line(PrunablePart):
    """A part whose MACs are its one unit's count times a GMAC."""

    table = ()

    def __init__(self, name, count):
        self.name, self.structure = name, count

    def macs(self, counts=None):
        return {"total": (self.structure if counts is None else counts["n"]) * 1e9}

    def params(self, counts=None):
        return {"total": 0.0}

    def with_structure(self, structure):
        return Line(self.name, structure)


def test_the_whole_model_latency_is_each_parts_fit_at_its_macs_and_reaches_the_gates():
    fits = {"frontend": (20.0, 10.0), "decoder": (100.0, 30.0), "ctc": (50.0, 0.0)}
    whole = WholeModelPart([Line("frontend", 4.0), Line("decoder", 2.0), FixedPart("ctc", 1e6, 0)], fits)
    assert whole.latency() == {"frontend": 60.0, "decoder": 160.0, "ctc": 50.0, "total": 270.0}
    expected = torch.tensor(3.0, requires_grad=True)
    cost = whole.latency({"frontend": {"n": expected}, "decoder": {"n": 2.0}})["total"]
    cost.backward()
    assert float(cost.detach()) == pytest.approx(260.0) and float(expected.grad) == pytest.approx(10.0)
    assert whole.with_structure({"frontend": 1.0}).latency()["total"] == pytest.approx(240.0)
    with pytest.raises(ValueError, match=r"no fit for the part\(s\) \['ctc'\]"):
        WholeModelPart(whole.parts, {"frontend": (0, 0), "decoder": (0, 0)})
    with pytest.raises(ValueError, match="has no latency table"):
        WholeModelPart(whole.parts).latency()
