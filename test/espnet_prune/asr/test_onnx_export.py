"""ONNX export of the frontend: onnxruntime reproduces PyTorch's features (compact and dense,
random and synthesised speech, several lengths, padded batches), inside ESPnet too."""

import numpy as np
import onnx
import pytest
import torch

from espnet_prune.asr.frontend.calibration import held_out_speech, synthesized_speech
from espnet_prune.asr.frontend.onnx_export import (
    INPUT_NAMES,
    INT8_TOLERANCE,
    OUTPUT_NAMES,
    EncoderFeatures,
    OnnxFrontend,
    check_int8_error,
    export_int8,
    export_onnx,
    max_feature_diff,
    quantize_onnx,
    quantize_onnx_static,
    relative_feature_error,
)
from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.ssl.model import EmptyLinear, SSLEncoder
from espnet_prune.utils.espeak import synthesize
from test.espnet_prune.conftest import make_batch, perturb_
from test.espnet_prune.ssl.tiny import tiny_config

TOLERANCE = 1e-4
#: Static int8 on the tiny random model: its 32-channel CNN and 48-wide layers quantize coarser than
#: wav2vec2-base's (measured: 8.5 % here, 2.5 % on wav2vec2-base at 0.5 of the MACs, which
#: benchmark_deploy checks against INT8_TOLERANCE).
TINY_STATIC_TOLERANCE = 0.15
ARCH = dict(tiny_config(embed_dim=48, ffn_dims=80).to_dict())


def compact_frontend(seed: int = 0) -> PrunedSSLFrontend:
    """A compact tiny frontend with random weights, some units of every kind removed and
    every head of layer 1 removed (its attention keeps a zero-size ``q/k/v/out_proj``)."""
    torch.manual_seed(seed)
    frontend = PrunedSSLFrontend(arch=ARCH, pruning={"units": ["conv", "head", "interm"], "target": 0.5})
    perturb_(frontend.encoder, seed)
    with torch.no_grad():
        for parameter in frontend.controller.gate_parameters():
            parameter.normal_(0.0, 3.0)
        frontend.controller.gates["head"]["1"].log_alpha.fill_(-20.0)
    frontend.make_compact()
    config = frontend.encoder.config
    assert config.num_heads[1] == 0 and config.use_attention[1]
    assert sum(config.ffn_dims) < 2 * 80 and sum(config.conv_channels) < 7 * 32
    return frontend.eval()


def batches():
    """Random batches of several lengths (one padded batch of two), and synthesised speech."""
    speech = torch.from_numpy(synthesize("turn on the light", rate_wpm=170))[None]
    speech2 = torch.from_numpy(synthesize("what is the weather today", variant="f2"))
    pair = torch.zeros(2, speech2.numel())
    pair[0] = speech2
    pair[1, :speech.shape[1]] = speech[0]
    return [
        make_batch((8000, 5100)),
        make_batch((400,), seed=1),  # the receptive field: one frame
        make_batch((23456,), seed=2),
        make_batch((12000, 12000, 3001), seed=3),
        (speech, torch.tensor([speech.shape[1]])),
        (pair, torch.tensor([speech2.numel(), speech.shape[1]])),
    ]


def test_compact_frontend_in_onnxruntime_matches_pytorch(tmp_path):
    frontend = compact_frontend()
    assert any(isinstance(m, EmptyLinear) for m in frontend.modules())
    path = export_onnx(frontend, tmp_path / "frontend.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    speech_dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    feats_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert speech_dims == ["batch", "samples"] and feats_dims == ["batch", "frames", 48]
    assert max_feature_diff(frontend, path, batches()) < TOLERANCE


def test_a_nan_on_either_side_is_no_agreement(tmp_path):
    """max_feature_diff is NaN, not 0, when one side computes NaN (max(0.0, nan) is 0.0)."""
    frontend = compact_frontend()
    path = export_onnx(frontend, tmp_path / "frontend.onnx")
    with torch.no_grad():
        next(p for n, p in frontend.named_parameters() if n.endswith("q_proj.weight"))[0, 0] = float("nan")
    diff = max_feature_diff(frontend, path, batches()[:2])
    assert not diff <= TOLERANCE and diff != diff


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_dense_frontends_export_the_same_way(tmp_path, model_type):
    torch.manual_seed(0)
    arch = dict(ARCH, model_type=model_type, normalize_waveform=model_type == "wav2vec2")
    frontend = PrunedSSLFrontend(arch=arch, multilayer_feature=True)
    perturb_(frontend, 1)
    path = export_onnx(frontend, tmp_path / "dense.onnx")
    assert max_feature_diff(frontend, path, batches()[:4]) < TOLERANCE


def test_a_bare_encoder_exports_its_last_hidden_state(tmp_path):
    torch.manual_seed(0)
    encoder = perturb_(SSLEncoder(tiny_config()), 2)
    path = export_onnx(encoder, tmp_path / "encoder.onnx")
    speech, lengths = make_batch((6000, 4500))
    with torch.no_grad():
        expected = encoder(speech, lengths)[0][-1]
    actual, _ = OnnxFrontend(path)(speech, lengths)
    assert (expected[0] - actual[0]).abs().max() < TOLERANCE
    assert max_feature_diff(EncoderFeatures(encoder), path, [(speech, lengths)]) < TOLERANCE


def test_a_frontend_with_its_gates_is_refused(tmp_path):
    frontend = PrunedSSLFrontend(arch=ARCH, pruning={"target": 0.5})
    with pytest.raises(ValueError, match="export the compact model first"):
        export_onnx(frontend, tmp_path / "gated.onnx")
    with pytest.raises(ValueError, match="takes a pruned_ssl frontend or an SSLEncoder"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "linear.onnx")


def test_onnx_frontend_replaces_the_frontend_of_an_espnet_model(tmp_path):
    """The rest of the ESPnet model runs unchanged on onnxruntime's features."""
    from test.espnet_prune.asr.recipe_steps import training_config
    from test.espnet_prune.asr.test_pruned_ssl_frontend import build_asr_model

    torch.manual_seed(0)
    model = build_asr_model(training_config()).eval()
    path = export_onnx(model.frontend, tmp_path / "frontend.onnx")
    speech, lengths = make_batch((9000, 7000))
    with torch.no_grad():
        expected, expected_lengths = model.encode(speech, lengths)
        model.frontend = OnnxFrontend(path, threads=1)
        assert model.frontend.output_size() == 48
        actual, actual_lengths = model.encode(speech, lengths)
    assert torch.equal(expected_lengths, actual_lengths)
    for i, frames in enumerate(actual_lengths.tolist()):
        assert (expected[i, :frames] - actual[i, :frames]).abs().max() < 1e-3


def test_int8_onnx_stays_close_to_fp32(tmp_path):
    frontend = compact_frontend(seed=1)
    fp32 = export_onnx(frontend, tmp_path / "frontend.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "frontend.int8.onnx")
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops and "ConvInteger" in ops
    assert int8.stat().st_size < fp32.stat().st_size
    speech, lengths = make_batch((16000, 11000))
    with torch.no_grad():
        expected, _ = frontend(speech, lengths)
    actual, _ = OnnxFrontend(int8)(speech, lengths)
    relative = float(np.linalg.norm(actual[0] - expected[0]) / np.linalg.norm(expected[0]))
    assert 0.0 < relative < 0.05


def speech_batch(seconds: float = 3.0):
    speech = torch.from_numpy(held_out_speech(seconds))[None]
    return speech, torch.tensor([speech.shape[1]])


def test_static_int8_runs_the_convolutions_in_int8(tmp_path):
    """QDQ around every Conv but the first (its input is the waveform) and every MatMul; every
    other operator reads float values (not the 8-bit copy), except after a quantized Conv."""
    frontend = compact_frontend(seed=1)
    fp32 = export_onnx(frontend, tmp_path / "frontend.onnx")
    int8 = quantize_onnx_static(fp32, tmp_path / "frontend.int8.onnx", synthesized_speech(3)[0])
    graph = onnx.load(str(int8)).graph
    producers = {output: node for node in graph.node for output in node.output}

    def dequantized(name):
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    convs = [node for node in graph.node if node.op_type == "Conv"]
    matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    assert len(convs) == 8 and matmuls  # 7 CNN layers and the positional convolution
    assert not any(dequantized(name) for name in convs[0].input)
    for node in convs[1:] + matmuls:
        assert all(dequantized(name) for name in node.input[:2]), node.name
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for conv in convs[1:]:
        assert [reader.op_type for reader in readers[conv.output[0]]] == ["QuantizeLinear"]
    for node in graph.node:
        if node.op_type in ("Conv", "MatMul", "QuantizeLinear", "DequantizeLinear"):
            continue
        for name in node.input:
            if dequantized(name):
                origin = producers[producers[producers[name].input[0]].input[0]]
                assert origin.op_type == "Conv", (node.name, name)
    error = relative_feature_error(frontend, int8, [speech_batch()])
    assert 0.0 < error <= TINY_STATIC_TOLERANCE, error
    assert int8.stat().st_size < fp32.stat().st_size


def test_the_int8_check_fails_on_nan_and_large_errors(tmp_path):
    check_int8_error(0.01)
    for error in (INT8_TOLERANCE + 1e-6, float("nan")):
        with pytest.raises(ValueError, match="from fp32"):
            check_int8_error(error)
    frontend = compact_frontend(seed=2)
    path = export_onnx(frontend, tmp_path / "frontend.onnx")
    speech, lengths = speech_batch(1.0)
    assert relative_feature_error(frontend, path, [(speech, lengths)]) < 1e-5
    nan_input = speech.clone()
    nan_input[0, 100] = float("nan")
    assert np.isnan(relative_feature_error(frontend, path, [(nan_input, lengths)]))
    with torch.no_grad():
        frontend.encoder.feature_extractor.conv_layers[2].conv.weight[0, 0, 0] = float("nan")
    error = relative_feature_error(frontend, path, [(speech, lengths)])
    with pytest.raises(ValueError, match="nan %"):
        check_int8_error(error)


def test_export_int8_writes_the_fastest_candidate_within_the_tolerance(tmp_path):
    frontend = compact_frontend(seed=1)
    fp32 = export_onnx(frontend, tmp_path / "frontend.onnx")
    entry = export_int8(frontend, fp32, tmp_path / "frontend.int8.onnx", "fastest", calibration="synth:3",
                        tolerance=TINY_STATIC_TOLERANCE, check_seconds=2.0, rounds=1)
    assert sorted(entry["rel_l2_vs_fp32"]) == ["dynamic", "static"]
    assert sorted(entry["latency_ms"]) == ["dynamic", "fp32", "static"]
    chosen = entry["method"]
    assert entry["latency_ms"][chosen] == min(entry["latency_ms"][name] for name in ("dynamic", "static"))
    assert entry["calibration"] == ("synth:3" if chosen == "static" else None)
    assert f"{chosen} " in entry["reason"] and entry["path"] == str(tmp_path / "frontend.int8.onnx")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frontend.int8.onnx", "frontend.onnx"]
    ops = {node.op_type for node in onnx.load(entry["path"]).graph.node}
    assert ("ConvInteger" in ops) == (chosen == "dynamic") and ("QuantizeLinear" in ops) == (chosen == "static")
    with pytest.raises(ValueError, match=r"no int8 model within the tolerance of 0.001 % \(.*\): static [0-9.]+ %"):
        export_int8(frontend, fp32, tmp_path / "strict.int8.onnx", "static", calibration="synth:3",
                    tolerance=1e-5, check_seconds=2.0)
    assert not (tmp_path / "strict.int8.onnx").exists() and not (tmp_path / "strict.int8.static.onnx").exists()
