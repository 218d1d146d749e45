"""ONNX export of the frontend: onnxruntime reproduces PyTorch's features (compact and dense,
random and synthesised speech, several lengths, padded batches), inside ESPnet too."""

import numpy as np
import onnx
import pytest
import torch

from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.ssl.model import EmptyLinear, SSLEncoder
from espnet_prune.ssl.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    EncoderFeatures,
    OnnxFrontend,
    export_onnx,
    max_feature_diff,
    quantize_onnx,
)
from espnet_prune.utils.espeak import synthesize
from test.espnet_prune.conftest import make_batch, perturb_
from test.espnet_prune.ssl.tiny import tiny_config

TOLERANCE = 1e-4
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
