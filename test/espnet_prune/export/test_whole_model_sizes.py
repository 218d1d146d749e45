"""Export of a whole-model run with several sizes (``model_conf.pruning.targets``): every size is
written as its own standalone experiment (``D/target0.80/``, ``D/target0.60/`` and the summary),
its report carries the whole-model cost, and ESPnet's ``Speech2Text`` decodes each exported size
exactly as it decodes the gated model at that size (the size's snapshot, or the model itself
for the last size).

The run's end is made by hand (no training): gates drawn for size 1 and its snapshot taken, then
other gates and weights for size 2, as the schedule leaves them in ``latest.pth``.
"""

import json

import pytest
import torch
import yaml

from espnet_prune.export.experiment import export_experiment
from espnet_prune.export.report import ExportReport, SizesSummary
from espnet_prune.inference.shapes import write_train_config
from espnet_prune.pruning.metrics import metric_cost
from test.espnet_prune.asr.test_pruned_ssl_frontend import build_asr_model
from test.espnet_prune.asr.test_whole_model import conformer_config

TARGETS = [0.8, 0.6]
TOKENS = ["<blank>", "<unk>", "a", "b", "<sos/eos>"]
DECODING = {"beam_size": 2, "ctc_weight": 0.3}


@pytest.fixture(scope="module")
def run_end(tmp_path_factory):
    """``exp/config.yaml``, ``exp/latest.pth`` (both sizes) and ``exp/size0.pth`` (the gated model
    at size 1: its snapshot, as a model file of its own)."""
    exp = tmp_path_factory.mktemp("whole_sizes") / "exp"
    config = conformer_config({"targets": TARGETS, "warmup_steps": 2, "hold_steps": 2, "reference_seconds": 2,
                               "decoding": {**DECODING, "tokens_per_second": 4}})
    config.update(token_list=TOKENS, input_size=None)
    config["model_conf"]["ctc_weight"] = 0.3
    train_config = write_train_config(config, exp / "config.yaml")
    torch.manual_seed(0)
    model = build_asr_model(config)
    controller = model.controller
    controller.snapshots.allocate(model)
    with torch.no_grad():
        for gate in controller.gate_parameters():
            gate.normal_(3.0, 2.0)
    model.eval()
    first = controller.deterministic_ratios()
    controller.step.fill_(4)
    controller.snapshots.take(0, model, 4, first, first)
    with torch.no_grad():
        for gate in controller.gate_parameters():
            gate.normal_(0.5, 3.0)
        for parameter in model.decoder.parameters():  # the last size went on training
            parameter.mul_(1.2)
    controller.step.fill_(8)
    last = controller.deterministic_ratios()
    assert first["total"] - last["total"] > 0.1, (first, last)
    torch.save(model.state_dict(), exp / "latest.pth")
    torch.save(controller.snapshots.model_state(0), exp / "size0.pth")
    return train_config, exp, model


@pytest.fixture(scope="module")
def exported(run_end):
    """What export wrote for the run (``export_experiment``) and where."""
    train_config, exp, _ = run_end
    out = exp.parent / "out"
    return export_experiment(train_config, exp / "latest.pth", out), out


def decode(config, model_file, speech):
    """``Speech2Text``'s n-best of ``speech`` with beam search and CTC, as asr_inference runs it:
    ``[(token ids, score)]``."""
    from espnet2.bin.asr_inference import Speech2Text

    speech2text = Speech2Text(asr_train_config=str(config), asr_model_file=str(model_file), device="cpu",
                              nbest=2, **DECODING)
    with torch.no_grad():
        results = speech2text(speech)
    return [(hypothesis.yseq.tolist(), float(hypothesis.score)) for *_, hypothesis in results]


def test_every_size_of_a_whole_model_run_is_exported_and_decodes_as_the_gated_model_at_that_size(run_end, exported):
    train_config, exp, _ = run_end
    exported, out = exported
    names = ["target0.80", "target0.60"]
    assert [report.size.name for report in exported.reports] == names
    summary = SizesSummary.read(out / "summary.json")
    assert summary == exported.summary and summary.whole_model()
    assert (out / "summary.md").read_text(encoding="utf-8").strip() == exported.table()
    speech = torch.randn(24000, generator=torch.Generator().manual_seed(3))  # 1.5 s
    gated_models = [exp / "size0.pth", exp / "latest.pth"]
    decoded = []
    for index, (name, gated_model) in enumerate(zip(names, gated_models)):
        size_dir = out / name
        report = ExportReport.read(size_dir / "latest.json")
        assert report == exported.reports[index] and report.size.targets == {"total": TARGETS[index]}
        assert set(report.downstream) == {"encoder", "decoder"} and report.model is not None
        # The report's whole-model ratio is the exported budget's, and the summary shows it.
        assert report.model.ratio["macs"]["total"] == pytest.approx(report.pruning.budgets["total"].exported)
        assert summary.sizes[index].model_macs_ratio == report.model.ratio["macs"]["total"]
        assert summary.sizes[index].model_params_ratio == report.model.ratio["params"]["total"]
        config = yaml.safe_load((size_dir / "config.yaml").read_text(encoding="utf-8"))
        assert "pruning" not in config["model_conf"] and config["frontend_conf"]["checkpoint"] is None
        assert config["encoder_conf"]["pruned_structure"] == report.downstream["encoder"].after
        gated = decode(train_config, gated_model, speech)
        compact = decode(size_dir / "config.yaml", size_dir / "latest.pth", speech)
        assert [ids for ids, _ in compact] == [ids for ids, _ in gated], name
        for (_, compact_score), (_, gated_score) in zip(compact, gated):
            assert abs(compact_score - gated_score) <= 1e-3 * max(1.0, abs(gated_score)), (name, compact, gated)
        decoded.append(gated)
    # The sizes are different models: the first size is its snapshot, not the final model.
    assert decoded[0] != decoded[1]
    first, last = (report.model.ratio["macs"]["total"] for report in exported.reports)
    assert first - last > 0.1


def test_the_whole_model_cost_is_the_controllers_for_the_compact_parts(run_end, exported):
    """The report's ``model`` against the controller's own cost model, dense and for the structures
    the exported config names; the decoding it is priced for; the frontend's ``encoder`` field."""
    _, _, model = run_end
    exported, out = exported
    report = exported.reports[1]
    part = model.controller.part
    size_dir = out / "target0.60"
    config = yaml.safe_load((size_dir / "config.yaml").read_text(encoding="utf-8"))
    from espnet2.tasks.asr import ASRTask

    compact_model, _ = ASRTask.build_model_from_file(str(size_dir / "config.yaml"), str(size_dir / "latest.pth"),
                                                     "cpu")
    compact = {"frontend": compact_model.frontend.encoder.config, "encoder": compact_model.encoder.structure,
               "decoder": compact_model.decoder.structure}
    assert compact_model.encoder.pruned_structure == config["encoder_conf"]["pruned_structure"]
    for metric in ("macs", "params"):
        dense = {k: float(v) for k, v in metric_cost(metric, part).items()}
        after = {k: float(v) for k, v in metric_cost(metric, part.with_structure(compact)).items()}
        assert report.model.before[metric] == pytest.approx(dense)
        assert report.model.after[metric] == pytest.approx(after)
        assert report.model.ratio[metric]["total"] == pytest.approx(after["total"] / dense["total"])
    assert report.model.parts == ["frontend", "encoder", "decoder", "ctc"]
    assert report.model.decoding == {**DECODING, "tokens_per_second": 4}
    assert report.model.ratio["macs"]["ctc"] == 1.0  # a fixed cost
    # encoder stays the SSL frontend's alone
    assert report.ratio("macs") == pytest.approx(report.model.ratio["macs"]["frontend"])
    saved = json.loads((size_dir / "latest.json").read_text(encoding="utf-8"))
    assert saved["model"]["ratio"]["macs"]["total"] == report.model.ratio["macs"]["total"]
