"""The typed export report: JSON round trip, refusal of malformed files, and doc/export.md's
field tables against the dataclasses."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from espnet_prune.export import report as report_module
from espnet_prune.export.report import (
    Budget,
    BudgetSummary,
    EncoderCost,
    ExportReport,
    ModelCost,
    OnnxFile,
    ParamCount,
    ReportError,
    SizeInfo,
    SizesSummary,
    Structure,
)

DOC = Path(__file__).parents[3] / "doc" / "export.md"


def costs(scale: float):
    return {metric: {"cnn": 10.0 * scale, "pos_conv": 0.0, "transformer": 30.0 * scale, "total": 40.0 * scale}
            for metric in ("params", "macs")}


def model_costs(scale: float, decoder: float = 1.0):
    return {metric: {"frontend": 40.0 * scale, "cnn": 10.0 * scale, "transformer": 30.0 * scale,
                     "decoder": 50.0 * decoder, "ctc": 10.0, "total": 40.0 * scale + 50.0 * decoder + 10.0}
            for metric in ("params", "macs")}


def a_model_cost(scale: float = 0.5, decoder: float = 0.6) -> ModelCost:
    return ModelCost.of(["frontend", "decoder", "ctc"], {"beam_size": 4, "tokens_per_second": 6.0, "ctc_weight": 0.3},
                        model_costs(1.0), model_costs(scale, decoder))


def a_report(**overrides) -> ExportReport:
    summary = BudgetSummary(metric="macs", steps=40, warmup_steps=10, hold_steps=5,
                            budgets={"total": Budget(0.6, 0.61, 0.5, False, "train longer")},
                            undecided_units={"head": 1}, explanation=None, warnings=["missed"])
    fields = dict(train_config="exp/a/config.yaml", model_file="exp/a/latest.pth", task="asr", reference_seconds=5.0,
                  encoder=EncoderCost.of(costs(1.0), costs(0.5)), model_params=ParamCount(100, 60),
                  structure=Structure({"embed_dim": 8}, {"embed_dim": 8}), max_abs_diff_gated_vs_compact=1e-6,
                  pruning=summary, size=SizeInfo(1, "target0.60", {"total": 0.6}, 40), output_dir="d",
                  config="d/config.yaml", output="d/latest.pth", files={"bpemodel": "bpe.model"},
                  max_abs_diff_gated_vs_exported=2e-6,
                  onnx=OnnxFile("f.onnx", 1e-5, {"path": "f.int8.onnx", "method": "static"}),
                  downstream={"encoder": Structure({"linear_units": [4, 4]}, {"linear_units": [2, 3]})},
                  model=a_model_cost())
    fields.update(overrides)
    return ExportReport(**fields)


def test_a_report_survives_json_with_its_key_order():
    report = a_report()
    data = json.loads(json.dumps(report.to_json()))
    assert ExportReport.from_json(data) == report
    assert list(data) == [field.name for field in dataclasses.fields(ExportReport)]
    assert list(data["pruning"])[:4] == ["metric", "steps", "warmup_steps", "hold_steps"]
    assert data["encoder"]["ratio"]["macs"] == {"cnn": 0.5, "transformer": 0.5, "total": 0.5}  # pos_conv 0: left out


def test_optional_fields_are_left_out_and_required_nulls_kept():
    data = a_report(size=None, output_dir=None, config=None, files=None, max_abs_diff_gated_vs_exported=None,
                    onnx=None, downstream=None, model=None,
                    pruning=dataclasses.replace(a_report().pruning, hold_steps=None)).to_json()
    assert "size" not in data and "onnx" not in data and "output_dir" not in data and data["output"] == "d/latest.pth"
    assert "model" not in data and "downstream" not in data  # a frontend-only report: as before the whole model
    assert "hold_steps" not in data["pruning"] and data["pruning"]["explanation"] is None
    assert ExportReport.from_json(data).size is None


def test_a_malformed_report_is_refused_naming_the_key(tmp_path):
    data = a_report().to_json()
    del data["pruning"]["budgets"]["total"]["exported"]
    with pytest.raises(ReportError, match=r"ExportReport\.pruning\.budgets\.total lacks the key 'exported'"):
        ExportReport.from_json(data)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**a_report().to_json(), "extra": 1}))
    with pytest.raises(ReportError, match=rf"{re.escape(str(path))} has unknown keys \['extra'\]"):
        ExportReport.read(path)
    path.write_text("{")
    with pytest.raises(ReportError, match="is not JSON"):
        ExportReport.read(path)
    with pytest.raises(FileNotFoundError, match="export did not write it"):
        ExportReport.read(tmp_path / "none.json")


def test_the_summary_of_several_sizes(tmp_path):
    reports = [a_report(size=SizeInfo(i, f"target0.{8 - 2 * i}0", {"total": 0.8 - 0.2 * i}, 20 * (i + 1)))
               for i in range(2)]
    summary = SizesSummary.of(Path("c.yaml"), Path("m.pth"), reports)
    summary.write(tmp_path / "summary.json")
    assert SizesSummary.read(tmp_path / "summary.json") == summary
    row = summary.sizes[1].to_json()
    assert row["size"] == "target0.60" and row["step"] == 40 and row["macs_ratio"] == 0.5
    assert row["exported"] == {"total": 0.5} and row["reached"] is False
    assert summary.table(5.0).splitlines()[3].startswith("| target0.80 | total 0.80 | 20 |")


def test_a_whole_model_report_carries_the_whole_decode_and_its_summary_shows_it(tmp_path):
    report = a_report()
    model = ExportReport.from_json(json.loads(json.dumps(report.to_json()))).model
    assert model == report.model and model.parts == ["frontend", "decoder", "ctc"]
    # 0.5 x 40 + 0.6 x 50 + 10 of 100
    assert model.ratio["macs"]["total"] == pytest.approx(0.6) and model.ratio["macs"]["decoder"] == pytest.approx(0.6)
    assert report.ratio("macs") == 0.5  # the encoder field stays the SSL frontend's
    frontend_only = [a_report(model=None, size=SizeInfo(i, f"t{i}", {"total": 0.5}, 1)) for i in range(2)]
    whole = [a_report(size=SizeInfo(0, "t0", {"total": 0.7}, 1), model=a_model_cost(0.8, 0.7)),
             a_report(size=SizeInfo(1, "t1", {"total": 0.5}, 2))]
    old = SizesSummary.of(Path("c.yaml"), Path("m.pth"), frontend_only)
    assert "model_macs_ratio" not in old.to_json()["sizes"][0] and not old.whole_model()
    assert "model" not in old.table(5.0)
    assert old.table(5.0).splitlines()[0].startswith("| size | target | step | params |")
    summary = SizesSummary.of(Path("c.yaml"), Path("m.pth"), whole)
    summary.write(tmp_path / "summary.json")
    assert SizesSummary.read(tmp_path / "summary.json") == summary and summary.whole_model()
    assert summary.sizes[0].model_macs_ratio == pytest.approx(0.77)  # 0.8 x 40 + 0.7 x 50 + 10 of 100
    assert summary.sizes[1].model_params_ratio == pytest.approx(0.6)
    lines = summary.table(5.0).splitlines()
    assert lines[0].startswith("| size | target | step | frontend params | frontend params ratio | frontend MACs (5 s)")
    assert "| model params ratio | model MACs ratio | exported | reached |" in lines[0]
    assert lines[2].endswith("| 1.000 | 1.000 | – | – |")
    assert lines[3].endswith("| 0.500 | 0.770 | 0.770 | total 0.500 | no |")


def doc_tables():
    """``{class name: [field names]}`` of every ``### `Name``` section's table in doc/export.md."""
    tables, name = {}, None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"### `(\w+)`", line)
        if heading:
            name = heading.group(1)
            tables[name] = []
            continue
        row = re.match(r"\| `(\w+)` \|", line)
        if name and row:
            tables[name].append(row.group(1))
    return tables


def test_doc_lists_every_field_of_every_report_class():
    classes = {name: cls for name, cls in vars(report_module).items()
               if dataclasses.is_dataclass(cls) and cls.__module__ == report_module.__name__}
    tables = doc_tables()
    assert sorted(tables) == sorted(classes)
    for name, cls in classes.items():
        assert tables[name] == [field.name for field in dataclasses.fields(cls)], name
