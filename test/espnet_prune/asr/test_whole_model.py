"""``model_conf.pruning``: one budget over the model's parts, priced for its decoding."""

import copy

import pytest
import torch

from espnet_prune.pruning.config import DecodingConfig, ModelPruningConfig
from test.espnet_prune.asr.recipe_steps import training_config
from test.espnet_prune.asr.test_pruned_ssl_frontend import build_asr_model


def whole_config(pruning, **overrides):
    config = training_config(None, **overrides)
    config["model_conf"] = {**config["model_conf"], "pruning": pruning}
    return config


def test_a_budget_on_the_frontend_alone_behaves_as_frontend_conf_pruning():
    """Given the same gates and weights: same state keys (under ``frontend.``), costs, ratios,
    Lagrangian and deterministic structure."""
    budget = {"target": 0.5, "units": ["conv", "head", "interm"], "warmup_steps": 0}
    torch.manual_seed(0)
    frontend_only = build_asr_model(training_config(budget))
    torch.manual_seed(0)
    whole = build_asr_model(whole_config({**budget, "parts": ["frontend"]}))
    old, new = frontend_only.frontend.controller, whole.controller
    assert whole.frontend.controller is None
    renamed = {name.replace("gates.", "gates.frontend.", 1): value for name, value in old.state_dict().items()}
    assert list(new.state_dict()) == list(renamed)
    with torch.no_grad():
        for gate in old.gate_parameters():  # gates that differ from their initial value
            gate.normal_(generator=torch.Generator().manual_seed(2))
    new.load_state_dict({name.replace("gates.", "gates.frontend.", 1): value
                         for name, value in old.state_dict().items()})
    assert new.dense_cost["total"] == old.dense_cost["total"]
    old_loss, old_stats = old.regularization()
    new_loss, new_stats = new.regularization()
    assert float(new_loss.detach()) == float(old_loss.detach()) and new_stats == old_stats
    # the same weights decode the same deterministic structure
    whole.load_state_dict({key: value for key, value in frontend_only.state_dict().items()
                           if not key.startswith("frontend.controller.")}, strict=False)
    speech = torch.randn(1, 4000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([4000])
    with torch.no_grad():
        expected, _ = frontend_only.eval().encode(speech, lengths)
        found, _ = whole.eval().encode(speech, lengths)
    torch.testing.assert_close(found, expected, rtol=0, atol=0)


def test_the_decode_cost_adds_the_ctc_layer_and_its_prefix_scoring_as_fixed_cost():
    model = build_asr_model(whole_config({"target": 0.8, "decoding": {"beam_size": 4, "tokens_per_second": 2.0,
                                                                        "ctc_weight": 0.3},
                                          "reference_seconds": 2.0}))
    controller = model.controller
    assert [part.name for part in controller.part.parts] == ["frontend", "ctc"]
    from espnet_prune.ssl import cost

    config = model.frontend.encoder.config
    frames = cost.frames_for(config, 2.0)  # the transformer encoder with input_layer linear keeps them
    vocab, dim = model.ctc.ctc_lo.out_features, model.ctc.ctc_lo.in_features
    ctc = frames * dim * vocab + 2 * (2.0 * 2.0) * 4 * min(vocab, 6) * frames
    frontend = cost.count_macs(config, 2.0)["total"]
    assert controller.dense_cost["ctc"] == pytest.approx(ctc)
    assert controller.dense_cost["total"] == pytest.approx(frontend + ctc)
    # the floor of a budget over both parts: the CTC cost stays
    assert controller.minimum_ratios()["total"] > ctc / (frontend + ctc) - 1e-9


@pytest.mark.parametrize("pruning, match", [
    ({"target": 0.5, "parts": ["frontend", "joiner"]}, r"model_conf.pruning.parts: Unknown part\(s\) \['joiner'\]"),
    ({"target": 0.5, "decoding": {"beam": 4}}, r"Unknown key\(s\) \['beam'\] in model_conf.pruning.decoding"),
    ({"target": 0.5, "decoding": {"ctc_weight": 1.5}}, r"model_conf.pruning.decoding.ctc_weight must lie in"),
    ({"target": 0.5, "decoding": {"beam_size": 0}}, r"model_conf.pruning.decoding.beam_size must be >= 1"),
    ({"target": 0.5, "target_typo": 1}, r"Unknown key\(s\) \['target_typo'\] in model_conf.pruning"),
    ({"target": 0.5, "units": {"frontend": ["conv", "bogus"]}}, r"units.frontend: Unknown pruning unit"),
    ({"encoder_target": 0.5, "parts": ["frontend"]}, r"encoder_target budgets part 'encoder'"),
    ({"target": 0.5, "frontend_target": 0.5}, r"'target' \(joint budget\) is exclusive"),
    ({"target": 0.5, "metric": "latency"}, r"latency needs model_conf.pruning.latency_table.*profile_decode_latency"),
    ({"target": 0.5, "metric": "latency", "latency_table": "none.json"}, r"latency_table: none.json does not exist"),
])
def test_bad_model_pruning_keys_are_named_before_the_model_is_built(pruning, match):
    with pytest.raises(ValueError, match=match):
        ModelPruningConfig.from_dict(pruning, "model_conf.pruning")


def test_parts_the_model_cannot_prune_and_both_budgets_at_once_are_named_errors():
    with pytest.raises(ValueError, match=r"parts names \['encoder'\], which this model does not have"):
        build_asr_model(whole_config({"target": 0.5, "parts": ["frontend", "encoder"]}))
    both = whole_config({"target": 0.5})
    both["frontend_conf"]["pruning"] = {"target": 0.5}
    with pytest.raises(ValueError, match="model_conf.pruning and frontend_conf.pruning are both set"):
        build_asr_model(both)


def test_separate_budgets_per_part_and_several_sizes():
    config = ModelPruningConfig.from_dict({"frontend_targets": [0.8, 0.6], "encoder_targets": [0.9, 0.7]},
                                          "model_conf.pruning")
    assert config.sizes() == [{"frontend": 0.8, "encoder": 0.9}, {"frontend": 0.6, "encoder": 0.7}]
    assert ModelPruningConfig.from_dict({"target": 0.5}, "m").decoding == DecodingConfig()
    model = build_asr_model(whole_config({"frontend_target": 0.6, "parts": ["frontend", "ctc"]}))
    assert set(model.controller.deterministic_ratios()) == {"frontend"}
    copy.deepcopy(model)


def conformer_config(pruning, **overrides):
    """The tiny pruned_ssl frontend with a 2-block pruned Conformer and a 2-layer pruned decoder."""
    config = whole_config(pruning, **overrides)
    config["encoder"] = "pruned_conformer"
    config["encoder_conf"] = {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2,
                              "input_layer": "conv2d2", "macaron_style": True, "rel_pos_type": "latest",
                              "cnn_module_kernel": 3, "dropout_rate": 0.0, "attention_dropout_rate": 0.0,
                              "positional_dropout_rate": 0.0, "use_flash_attn": False}
    config["decoder"] = "pruned_transformer"
    config["decoder_conf"] = {**config["decoder_conf"], "num_blocks": 2}
    return config


def test_the_whole_decode_is_priced_part_by_part():
    from espnet_prune.asr.downstream import cost as downstream
    from espnet_prune.ssl import cost

    decoding = {"beam_size": 3, "tokens_per_second": 4.0, "ctc_weight": 0.3}
    model = build_asr_model(conformer_config({"target": 0.6, "decoding": decoding, "reference_seconds": 2.0}))
    controller = model.controller
    assert [part.name for part in controller.part.parts] == ["frontend", "encoder", "decoder", "ctc"]
    assert set(controller.gates) == {"frontend", "encoder", "decoder"}
    frames = cost.frames_for(model.frontend.encoder.config, 2.0)
    encoder_frames = downstream.encoder_output_frames(model.encoder.structure, frames)
    frontend = cost.count_macs(model.frontend.encoder.config, 2.0)["total"]
    encoder = downstream.encoder_macs(model.encoder.structure, frames)["total"]
    decoder = 3 * downstream.decoder_macs(model.decoder.structure, encoder_frames, 8)["total"]
    dense = controller.dense_cost
    assert (dense["frontend"], dense["encoder"], dense["decoder"]) == (frontend, encoder, decoder)
    assert dense["total"] == pytest.approx(frontend + encoder + decoder + dense["ctc"])
    params = build_asr_model(conformer_config({"target": 0.6, "metric": "params", "parts": ["encoder", "decoder"]}))
    assert params.controller.dense_cost["total"] == (downstream.encoder_params(model.encoder.structure)["total"]
                                                     + downstream.decoder_params(model.decoder.structure)["total"])


def test_the_model_hands_every_part_its_masks_in_training_and_eval():
    model = build_asr_model(conformer_config({"target": 0.6, "warmup_steps": 0}))
    speech = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    batch = dict(speech=speech, speech_lengths=torch.tensor([4000, 3000]), text=torch.tensor([[2, 3], [3, 2]]),
                 text_lengths=torch.tensor([2, 2]))
    model.train()
    loss, stats, _ = model(**batch)
    assert torch.isfinite(loss).all() and "prune_expected_total" in stats
    loss.sum().backward()
    assert all(gate.grad is not None for gate in model.controller.gate_parameters())
    assert model.frontend.masks is not None and model.encoder._masked and model.decoder._masked
    with torch.no_grad():
        for gate in model.controller.gate_parameters():
            gate.copy_(torch.where(torch.arange(gate.numel()).reshape(gate.shape) % 2 == 0, 5.0, -5.0))
    model.eval()
    masks = model.controller()
    assert set(masks) == {"frontend", "encoder", "decoder"}
    assert int((masks["encoder"]["head"][0] > 0).sum()) == 1  # one of two heads kept
    assert model.controller.deterministic_ratios()["total"] < 0.9


def test_the_compact_model_decodes_what_the_gated_model_decodes():
    """Physical pruning of every part (with the kept units' soft mask values folded in): the same
    encoder output and the same beam-search scores (``batch_score`` of the decoder)."""
    from espnet_prune.asr.whole_model import compact_model

    torch.manual_seed(0)
    model = build_asr_model(conformer_config({"target": 0.6, "warmup_steps": 0}))
    with torch.no_grad():
        for gate in model.controller.gate_parameters():
            gate.normal_(1.0, 3.0)
    model.eval()
    speech, lengths = torch.randn(1, 4000, generator=torch.Generator().manual_seed(1)), torch.tensor([4000])
    ys = torch.tensor([[4, 2, 3], [4, 3, 3]])
    with torch.no_grad():
        gated_out, _ = model.encode(speech, lengths)
        gated_scores, _ = model.decoder.batch_score(ys, [None, None], gated_out.expand(2, -1, -1))
        ratio = model.controller.deterministic_ratios()["total"]
        structures = compact_model(model)
        compact_out, _ = model.encode(speech, lengths)
        compact_scores, _ = model.decoder.batch_score(ys, [None, None], compact_out.expand(2, -1, -1))
    assert model.controller is None and set(structures) == {"frontend", "encoder", "decoder"}
    assert structures["encoder"]["after"] != structures["encoder"]["before"]
    assert ratio < 0.95
    torch.testing.assert_close(compact_out, gated_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compact_scores, gated_scores, rtol=1e-4, atol=1e-5)


def test_export_writes_the_compact_whole_model_as_a_standalone_experiment(tmp_path):
    """The export library on a model_conf.pruning model: encoder_conf / decoder_conf get the compact
    pruned_structure, model_conf loses pruning, and the directory alone rebuilds a model whose
    encoder output and decoder scores are the gated model's (export checks this itself)."""
    from espnet_prune.export.experiment import export_experiment
    from espnet_prune.export.sizes import pruning_sizes
    from espnet_prune.inference.shapes import write_train_config

    config = conformer_config({"target": 0.6, "warmup_steps": 0})
    config.update(token_list=["<blank>", "<unk>", "a", "b", "<sos/eos>"], input_size=None)
    assert pruning_sizes(config) == [{"total": 0.6}]
    train_config = write_train_config(config, tmp_path / "exp" / "config.yaml")
    torch.manual_seed(0)
    model = build_asr_model(config)
    with torch.no_grad():
        for gate in model.controller.gate_parameters():
            gate.normal_(1.0, 3.0)
    torch.save(model.state_dict(), tmp_path / "exp" / "model.pth")
    onnx = tmp_path / "frontend.onnx"
    report = export_experiment(train_config, tmp_path / "exp" / "model.pth", tmp_path / "compact", onnx=onnx,
                               onnx_int8={"method": "dynamic"}).reports[0]
    assert set(report.downstream) == {"encoder", "decoder"}
    # the ONNX frontend and its int8 copy keep working on a whole-model export
    assert report.onnx.max_abs_diff_torch_vs_onnxruntime <= 1e-3 and onnx.with_suffix(".int8.onnx").is_file()
    assert report.max_abs_diff_gated_vs_exported <= 1e-3 and report.max_abs_diff_gated_vs_compact <= 1e-3
    import yaml

    exported = yaml.safe_load((tmp_path / "compact" / "config.yaml").read_text(encoding="utf-8"))
    assert "pruning" not in exported["model_conf"]
    assert exported["encoder_conf"]["pruned_structure"] == report.downstream["encoder"].after
    assert exported["decoder_conf"]["pruned_structure"] == report.downstream["decoder"].after
    assert set(report.pruning.budgets) == {"total"}
    # and so does ESPnet's int8 decode (Speech2Text's quantize_asr_model) of the compact whole model
    from espnet_prune.inference.decode_timing import DecodeSystem, build_decoder

    system = DecodeSystem("int8", tmp_path / "compact" / "config.yaml", tmp_path / "compact" / "model.pth")
    decode = dict(beam_size=2, ctc_weight=0.3, maxlenratio=-3.0, minlenratio=-2.0)
    speech = torch.randn(16000, generator=torch.Generator().manual_seed(0)).numpy()
    fp32 = build_decoder("asr", system, decode)(speech)
    int8 = build_decoder("asr", system, {**decode, "quantize_asr_model": True})(speech)
    assert len(fp32[0][1]) == len(int8[0][1]) == 3


def test_several_sizes_from_one_run_over_the_whole_model():
    from espnet_prune.export.sizes import size_names
    from espnet_prune.pruning.espnet_glue import find_controller

    config = conformer_config({"targets": [0.8, 0.6], "warmup_steps": 2, "hold_steps": 2})
    model = build_asr_model(config)
    controller = find_controller(model)
    assert controller is model.controller and controller.sizes == [{"total": 0.8}, {"total": 0.6}]
    controller.snapshots.allocate(model)
    snapshot = [key for key in model.state_dict() if key.startswith("controller.size_snapshots.size0.model.")]
    assert "controller.size_snapshots.size0.model.encoder.embed.conv.0.weight" in snapshot
    assert size_names(config) == ["target0.80", "target0.60"]


def decode_table(model, path, decoding, seconds, rest_ms=10.0):
    """Write a decode latency table for ``model`` (its controller covers every part): each timed
    part costs 1 ms plus 1 ms per MMAC, the rest ``rest_ms``; returns the dense decode's ms."""
    from espnet_prune.pruning import decode_latency
    from espnet_prune.ssl.latency import processor_name

    dense = {part.name: float(part.macs()["total"]) / 1e9 for part in model.controller.part.parts
             if part.name != "ctc"}
    measured = []
    for scale in (1.0, 0.5):
        ms = {part: 1.0 + 1000.0 * gmacs * scale for part, gmacs in dense.items()}
        measured.append({"target": scale, "gmacs": {part: g * scale for part, g in dense.items()}, "ms": ms,
                         "total_ms": rest_ms + sum(ms.values())})
    on = {"device": "cpu", "device_name": processor_name(), "threads": torch.get_num_threads()}
    decode_latency.save_table(decode_latency.make_table(measured, on, decoding, seconds), path)
    return measured[0]["total_ms"]


def test_a_whole_model_latency_budget_prices_the_decode_with_its_measured_table(tmp_path):
    """``metric: latency`` with a decode latency table: the controller's dense cost is the table's
    dense decode, the budget rounds to its target, and a table measured for another decoding, an
    SSL encoder's table, a batch other than 1 or a CNN budget are named errors."""
    decoding = {"beam_size": 3, "tokens_per_second": 4.0, "ctc_weight": 0.3}
    macs = build_asr_model(conformer_config({"target": 0.6, "decoding": decoding, "reference_seconds": 2.0}))
    path = tmp_path / "decode.json"
    dense_ms = decode_table(macs, path, decoding, 2.0)
    pruning = {"target": 0.6, "metric": "latency", "latency_table": str(path), "decoding": decoding,
               "reference_seconds": 2.0}
    model = build_asr_model(conformer_config(pruning))
    controller = model.controller
    assert controller.metric == "latency"
    assert controller.dense_cost["total"] == pytest.approx(dense_ms)
    assert controller.dense_cost["ctc"] == pytest.approx(10.0)
    from espnet_prune.inference.budget_shapes import gates_at_budget

    gates_at_budget(controller, 0.6)
    model.eval()
    if not abs(controller.deterministic_ratios()["total"] - 0.6) <= 0.02:
        pytest.fail(f"deterministic latency ratio {controller.deterministic_ratios()['total']}")
    # export reports the predicted decode latency beside the MACs and parameters
    from espnet_prune.export.experiment import export_experiment
    from espnet_prune.inference.shapes import write_train_config

    config = conformer_config(pruning)
    config.update(token_list=["<blank>", "<unk>", "a", "b", "<sos/eos>"], input_size=None)
    train_config = write_train_config(config, tmp_path / "exp" / "config.yaml")
    torch.save(model.state_dict(), tmp_path / "exp" / "model.pth")
    report = export_experiment(train_config, tmp_path / "exp" / "model.pth", tmp_path / "compact").reports[0]
    assert report.model.before["latency"]["total"] == pytest.approx(dense_ms)
    if not abs(report.model.ratio["latency"]["total"] - controller.deterministic_ratios()["total"]) <= 1e-6:
        pytest.fail(f"exported latency ratio {report.model.ratio['latency']['total']}")
    assert report.pruning.metric == "latency"
    # separate per-part latency budgets and several sizes work the same way
    separate = build_asr_model(conformer_config({**pruning, "target": None, "frontend_targets": [0.8, 0.6],
                                                 "decoder_targets": [0.9, 0.7]}))
    assert separate.controller.dense_cost["decoder"] == pytest.approx(controller.dense_cost["decoder"])
    assert set(separate.controller.deterministic_ratios()) == {"frontend", "decoder"}
    with pytest.raises(ValueError, match="latency_table was measured with decoding.beam_size 3, the budget is "
                                         "priced for 4"):
        build_asr_model(conformer_config({**pruning, "decoding": {**decoding, "beam_size": 4}}))
    ssl = tmp_path / "ssl.json"
    ssl.write_text('{"format": "espnet_prune latency table", "version": 1}', encoding="utf-8")
    for bad, match in (({"latency_table": str(ssl)}, "is not a decode latency table"),
                       ({"latency_batch": 2}, "latency_batch must be 1 with a whole-model latency table"),
                       ({"target": None, "cnn_target": 0.5}, "cnn_target: a whole-model latency table prices the "
                                                             "frontend as a whole")):
        with pytest.raises(ValueError, match=match):
            ModelPruningConfig.from_dict({**pruning, **bad}, "model_conf.pruning")
