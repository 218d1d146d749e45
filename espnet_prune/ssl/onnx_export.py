"""ONNX export of the SSL frontend, and running it with onnxruntime inside ESPnet.

:func:`export_onnx` writes a ``pruned_ssl`` frontend (compact or dense) or a bare
:class:`~espnet_prune.ssl.model.SSLEncoder` as one ONNX graph::

    speech          float32 (batch, samples)   zero-padded waveforms
    speech_lengths  int64   (batch,)           valid samples
      -> feats          float32 (batch, frames, D)   the frontend's features
         feats_lengths  int64   (batch,)             valid frames

with dynamic ``batch``, ``samples`` and ``frames`` axes. The graph holds the whole
frontend: waveform normalisation (if the model has it), CNN, feature projection,
padding mask, Transformer, and the frontend's layer choice or weighted layer sum.
It is traced with ``torch.onnx.export(dynamo=False)``, which needs only the ``onnx``
package (the dynamo exporter would need ``onnxscript`` too).

:class:`OnnxFrontend` is an ESPnet ``AbsFrontend`` that runs such a file with
onnxruntime, so the rest of an ESPnet model (normalisation, encoder, CTC, decoder, beam
search) runs unchanged on its features::

    speech2text = Speech2Text("config.yaml", "model.pth")
    speech2text.asr_model.frontend = OnnxFrontend("frontend.onnx")

:func:`quantize_onnx` writes an int8 copy (onnxruntime's dynamic quantization of the
MatMul and Conv weights, the ONNX counterpart of ``--quantize_asr_model``).
"""

import logging
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from torch import Tensor, nn

from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.utils.finite import max_abs_diff, worst

INPUT_NAMES = ("speech", "speech_lengths")
OUTPUT_NAMES = ("feats", "feats_lengths")
DYNAMIC_AXES = {"speech": {0: "batch", 1: "samples"}, "speech_lengths": {0: "batch"},
                "feats": {0: "batch", 1: "frames"}, "feats_lengths": {0: "batch"}}
#: ONNX opset of the export (``scaled_dot_product_attention`` needs >= 14).
OPSET = 17

PathLike = Union[str, os.PathLike]


class EncoderFeatures(nn.Module):
    """A bare encoder as a frontend: ``(speech, speech_lengths) -> (last hidden state, frames)``."""

    def __init__(self, encoder: SSLEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, speech: Tensor, speech_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """``(B, S)``, ``(B,)`` -> ``(B, T, D)``, ``(B,)``."""
        hidden_states, lengths = self.encoder(speech, speech_lengths)
        return hidden_states[-1], lengths


def as_feature_module(model: nn.Module) -> nn.Module:
    """The module that is exported: a frontend as it is, a bare encoder wrapped.

    Raises:
        ValueError: for a frontend that still has its pruning gates (export the compact
            model first) or an unsupported module.
    """
    from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend

    if isinstance(model, SSLEncoder):
        return EncoderFeatures(model)
    if isinstance(model, PrunedSSLFrontend):
        if model.controller is not None:
            raise ValueError("this pruned_ssl frontend still carries its pruning gates; export the compact "
                             "model first (python -m espnet_prune.bin.export, or frontend.make_compact())")
        return model
    if isinstance(model, EncoderFeatures):
        return model
    raise ValueError(f"export_onnx takes a pruned_ssl frontend or an SSLEncoder, got {type(model).__name__}")


def example_input(sample_rate: int, seconds: float, receptive_field: int) -> Tuple[Tensor, Tensor]:
    """A batch of two zero-padded random waveforms of unequal lengths (the tracing input)."""
    samples = max(int(seconds * sample_rate), 2 * receptive_field)
    generator = torch.Generator().manual_seed(0)
    speech = torch.randn(2, samples, generator=generator)
    lengths = torch.tensor([samples, samples * 3 // 4])
    speech[1, lengths[1]:] = 0.0
    return speech, lengths


def export_onnx(model: nn.Module, path: PathLike, example_seconds: float = 1.0, opset: int = OPSET) -> Path:
    """Write ``model`` (a ``pruned_ssl`` frontend without gates, or an ``SSLEncoder``) to ``path``.

    Args:
        model: the frontend; put in eval mode (its training mode is restored afterwards).
        path: the ``.onnx`` file to write (its directory is created).
        example_seconds: duration of the tracing input; any length works afterwards.
        opset: ONNX opset.
    Returns:
        ``path``.
    """
    module = as_feature_module(model)
    encoder = module.encoder
    speech, lengths = example_input(encoder.config.sample_rate, example_seconds, encoder.receptive_field)
    device = next(module.parameters()).device
    speech, lengths = speech.to(device), lengths.to(device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter's deprecation notice, and the tracer's notes on Python-level
            # shape checks (max_feature_diff is the check that the graph computes the same).
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(module, (speech, lengths), str(path), dynamo=False, opset_version=opset,
                              input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                              dynamic_axes=DYNAMIC_AXES, do_constant_folding=True)
    finally:
        module.train(was_training)
    _name_output_dims(path, encoder.config.embed_dim)
    return path


def _name_output_dims(path: Path, feature_dim: int) -> None:
    """Give the outputs the axis names of :data:`DYNAMIC_AXES` and ``feats`` its fixed width
    (the tracer's shape inference leaves it symbolic)."""
    import onnx

    model = onnx.load(str(path))
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for axis, name in DYNAMIC_AXES[output.name].items():
            dims[axis].dim_param = name
        if output.name == "feats":
            dims[2].dim_value = feature_dim
    onnx.save(model, str(path))


#: Operators whose weights :func:`quantize_onnx` stores in 8 bits.
ONNX_QUANTIZE_OPS = ("MatMul", "Conv")


def quantize_onnx(source: PathLike, target: PathLike) -> Path:
    """Write an int8 copy of an exported frontend with onnxruntime's dynamic quantization.

    The weights of every MatMul (the linear layers) and Conv (the CNN and the positional
    convolution) become 8-bit; activations are quantized per call. Weights are unsigned
    (``QUInt8``): with signed weights onnxruntime's x86 u8s8 kernels saturate, and
    wav2vec2-base's features were 18 % off (relative L2) instead of about 3 %.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to run shape inference first (the graph has shapes)
    try:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=list(ONNX_QUANTIZE_OPS),
                         weight_type=QuantType.QUInt8)
    finally:
        root.setLevel(level)
    return target


def inference_session(path: PathLike, threads: Optional[int] = None):
    """An onnxruntime CPU session for ``path``; ``threads`` intra-op threads (default: onnxruntime's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, speech: Tensor, speech_lengths: Tensor) -> Tuple[Tensor, Tensor]:
    """Features ``(B, T, D)`` and frames ``(B,)`` of ``session`` for ``(B, S)`` waveforms."""
    feats, feats_lengths = session.run(list(OUTPUT_NAMES), {
        "speech": speech.detach().cpu().to(torch.float32).numpy(),
        "speech_lengths": speech_lengths.detach().cpu().to(torch.int64).numpy()})
    return torch.from_numpy(feats), torch.from_numpy(np.asarray(feats_lengths))


class OnnxFrontend(AbsFrontend):
    """An ESPnet frontend that computes the features with onnxruntime from an exported file.

    Args:
        path: ``.onnx`` file written by :func:`export_onnx` (or :func:`quantize_onnx`).
        threads: onnxruntime intra-op threads (default: onnxruntime's).
    """

    def __init__(self, path: PathLike, threads: Optional[int] = None):
        super().__init__()
        self.path = Path(path)
        self.session = inference_session(self.path, threads)
        dims = self.session.get_outputs()[0].shape
        if len(dims) != 3 or not isinstance(dims[2], int):
            raise ValueError(f"{self.path} is not an exported frontend: output 'feats' has shape {dims}, "
                             "expected (batch, frames, D) with a fixed D")
        self._output_size = dims[2]

    def output_size(self) -> int:
        return self._output_size

    def forward(self, input: Tensor, input_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """``(B, S)`` waveforms, ``(B,)`` valid samples -> ``(B, T, D)`` features, ``(B,)`` frames
        (on the input's device)."""
        feats, lengths = run_session(self.session, input, input_lengths)
        return feats.to(input.device), lengths.to(input.device)


def max_feature_diff(model: nn.Module, path: PathLike, batches: Sequence[Tuple[Tensor, Tensor]]) -> float:
    """Largest ``|PyTorch - onnxruntime|`` over the valid frames of ``batches`` (lengths equal too);
    NaN when either side computes a non-finite value.

    Raises:
        AssertionError: if the two disagree on any batch's frame lengths.
    """
    module = as_feature_module(model).eval()
    session = inference_session(path)
    diffs = []
    for speech, lengths in batches:
        with torch.no_grad():
            expected, expected_lengths = module(speech, lengths)
        actual, actual_lengths = run_session(session, speech, lengths)
        if not torch.equal(expected_lengths.to(torch.int64), actual_lengths):
            raise AssertionError(f"frame lengths differ: PyTorch {expected_lengths.tolist()}, "
                                 f"onnxruntime {actual_lengths.tolist()}")
        for i, frames in enumerate(expected_lengths.tolist()):
            diffs.append(max_abs_diff(expected[i, :frames], actual[i, :frames]))
    return worst(diffs)
