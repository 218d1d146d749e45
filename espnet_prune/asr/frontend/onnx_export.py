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
MatMul and Conv weights, the ONNX counterpart of ``--quantize_asr_model``);
:func:`quantize_onnx_static` writes one whose activation ranges are calibrated on speech
(QDQ format: onnxruntime runs the convolutions and matrix products in int8 kernels, without
the per-call quantization of every activation). :func:`relative_feature_error` measures what
either costs in accuracy. :func:`export_int8` is the deploy path's choice between them
(``python -m espnet_prune.bin.export --onnx F.onnx --onnx_int8 fastest``): it writes the int8
file that is fastest on this machine among those whose features stay within the tolerance.
"""

import contextlib
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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
    with _quiet_quantizer():
        quantize_dynamic(str(source), str(target), op_types_to_quantize=list(ONNX_QUANTIZE_OPS),
                         weight_type=QuantType.QUInt8)
    return target


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence onnxruntime.quantization's advice to run shape inference first (the graph has
    shapes) and its calibration progress lines."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        root.setLevel(level)


#: Calibration waveforms are joined and cut into segments of this length: onnxruntime's
#: percentile calibration stacks the activations of all segments, so they need one shape.
CALIBRATION_SEGMENT_SECONDS = 2.0
#: Percentile of each activation's magnitude over the calibration speech that sets its int8 range
#: (onnxruntime's default, 99.999, left wav2vec2-base's features 2.9 % off instead of 2.5 %; 99.9: 4.2 %).
CALIBRATION_PERCENTILE = 99.99
#: Largest relative L2 distance of int8 features from fp32 that the deploy path accepts.
INT8_TOLERANCE = 0.03


def calibration_segments(waveforms: Sequence[np.ndarray], sample_rate: int,
                         seconds: float = CALIBRATION_SEGMENT_SECONDS) -> List[np.ndarray]:
    """``waveforms`` joined and cut into ``(1, seconds * sample_rate)`` float32 segments (the
    remainder is dropped).

    Raises:
        ValueError: fewer samples than one segment.
    """
    joined = np.concatenate([np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms])
    length = int(seconds * sample_rate)
    if joined.size < length:
        raise ValueError(f"the calibration speech lasts {joined.size / sample_rate:.2f} s, less than one "
                         f"{seconds:g} s segment: give more utterances")
    return [joined[start:start + length][None] for start in range(0, joined.size - length + 1, length)]


def quantize_onnx_static(source: PathLike, target: PathLike, waveforms: Sequence[np.ndarray],
                         sample_rate: int = 16000) -> Path:
    """Write an int8 copy of an exported frontend whose activation ranges are calibrated on speech.

    onnxruntime's static quantization in QDQ format: the activations entering every Conv (the
    CNN and the positional convolution) and MatMul (linear layers and the two attention
    products) get fixed int8 ranges, the :data:`CALIBRATION_PERCENTILE` of their magnitude over
    ``waveforms`` (cut into :data:`CALIBRATION_SEGMENT_SECONDS` segments); weights are int8
    (symmetric, per tensor). onnxruntime fuses each quantize / dequantize pair with its
    operator into an int8 kernel (``QLinearConv``, ``MatMulIntegerToFloat``, ...).

    Three choices keep the features close to fp32 (measured on wav2vec2-base at 0.5 of the
    MACs, on held-out synthesised speech: 5.1 % relative L2 with onnxruntime's defaults, 2.5 %
    with these):

    * other operators read the float tensor: by default a quantized tensor is dequantized for
      every reader, so the residual stream and the layer norms would carry 8-bit values
      (:func:`_float_side_paths` rewires them);
    * MatMul outputs stay float (the bias and the residual add see no rounding); Conv outputs
      are quantized, which onnxruntime's int8 convolution needs (without it the CNN runs in
      float again);
    * the first convolution, whose input is the waveform itself, stays float (8-bit audio).

    Args:
        source: fp32 ``.onnx`` from :func:`export_onnx`.
        target: the int8 file to write.
        waveforms: ``(samples,)`` speech at ``sample_rate`` (see :mod:`espnet_prune.asr.frontend.calibration`).
        sample_rate: of ``waveforms``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    segments = calibration_segments(waveforms, sample_rate)

    class Segments(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(segments)

        def get_next(self):
            segment = next(self.remaining, None)
            return None if segment is None else {"speech": segment,
                                                 "speech_lengths": np.array([segment.shape[1]], dtype=np.int64)}

    first_conv = next(node.name for node in onnx.load(str(source)).graph.node if node.op_type == "Conv")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_quantizer():
        quantize_static(str(source), str(target), Segments(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(ONNX_QUANTIZE_OPS), nodes_to_exclude=[first_conv],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"],
                                       "CalibPercentile": CALIBRATION_PERCENTILE})
    model = onnx.load(str(target))
    _float_side_paths(model.graph)
    onnx.save(model, str(target))
    return target


def _float_side_paths(graph) -> None:
    """Let every operator that is not quantized read the float tensor instead of its
    quantize -> dequantize copy (except the outputs of quantized convolutions), and drop the
    pairs nobody reads any more. Modifies ``graph`` (an ``onnx.GraphProto``) in place."""
    producers = {output: node for node in graph.node for output in node.output}
    for node in graph.node:
        if node.op_type in ONNX_QUANTIZE_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            dequantize = producers.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = producers.get(dequantize.input[0])
            if quantize is None or quantize.op_type != "QuantizeLinear":
                continue
            origin = producers.get(quantize.input[0])
            if origin is not None and origin.op_type == "Conv":
                continue
            node.input[index] = quantize.input[0]
    while True:
        read = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
        unread = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                  and not any(output in read for output in node.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


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


def relative_feature_error(model: nn.Module, path: PathLike, batches: Sequence[Tuple[Tensor, Tensor]],
                           threads: Optional[int] = None) -> float:
    """Relative L2 distance ``||onnxruntime - PyTorch|| / ||PyTorch||`` of the features over the
    valid frames of ``batches`` (NaN if either side gives NaN): what an int8 file costs.

    Args:
        model: the fp32 frontend (or bare encoder) the file was exported from.
        path: an ``.onnx`` file of it (e.g. from :func:`quantize_onnx_static`).
        batches: ``((B, S) waveforms, (B,) lengths)`` pairs.
    """
    module = as_feature_module(model).eval()
    session = inference_session(path, threads)
    error = reference = 0.0
    for speech, lengths in batches:
        with torch.no_grad():
            expected, expected_lengths = module(speech, lengths)
        actual, _ = run_session(session, speech, lengths)
        for i, frames in enumerate(expected_lengths.tolist()):
            error += float((actual[i, :frames] - expected[i, :frames]).double().pow(2).sum())
            reference += float(expected[i, :frames].double().pow(2).sum())
    return (error / reference) ** 0.5 if reference > 0 else float("nan")


def check_int8_error(error: float, tolerance: float = INT8_TOLERANCE, what: str = "the int8 model") -> None:
    """Raise ``ValueError`` unless ``error`` (from :func:`relative_feature_error`) is within
    ``tolerance``; NaN fails."""
    if not error <= tolerance:
        raise ValueError(f"{what}'s features are {100 * error:.2f} % (relative L2) from fp32, more than the "
                         f"tolerance of {100 * tolerance:g} %")


#: What :func:`export_int8` writes: onnxruntime's dynamic int8, static int8 calibrated on
#: speech, or whichever of the two is faster here (within the tolerance).
INT8_METHODS = ("dynamic", "static", "fastest")


def export_int8(model: nn.Module, source: PathLike, target: PathLike, method: str = "fastest",
                calibration: Optional[str] = None, tolerance: float = INT8_TOLERANCE, threads: int = 1,
                check_seconds: float = 10.0, rounds: int = 3) -> Dict[str, Any]:
    """Write the int8 copy of an exported frontend that the deploy path uses, and say why.

    Every candidate (``dynamic``: :func:`quantize_onnx`; ``static``: :func:`quantize_onnx_static`
    calibrated on ``calibration``) is checked on ``check_seconds`` of held-out synthesised speech
    (:func:`espnet_prune.asr.frontend.calibration.held_out_speech`): its features must be within
    ``tolerance`` (relative L2) of ``model``'s in PyTorch fp32. With ``fastest`` both candidates
    and the fp32 file are timed interleaved (``rounds`` rounds at ``threads`` threads, batch 1) and
    the fastest candidate within the tolerance is written.

    Args:
        model: the compact frontend (or bare encoder) in fp32; ``source`` is its export.
        source: the fp32 ``.onnx`` file.
        target: the int8 file to write.
        method: one of :data:`INT8_METHODS`.
        calibration: calibration source (``synth:N`` or a ``wav.scp``; default
            :data:`~espnet_prune.asr.frontend.calibration.DEFAULT_CALIBRATION`).
    Returns:
        the report entry: ``{"path", "method" (the one written), "calibration", "tolerance",
        "rel_l2_vs_fp32": {candidate: error}, "latency_ms": {"fp32", candidate: ms} (``fastest``
        only), "threads", "check_seconds", "reason"}``.
    Raises:
        ValueError: unknown method, or no candidate within the tolerance (the errors named).
    """
    from espnet_prune.asr.frontend.calibration import DEFAULT_CALIBRATION, calibration_speech, held_out_speech
    from espnet_prune.utils.timing import time_interleaved

    if method not in INT8_METHODS:
        raise ValueError(f"int8 method must be one of {INT8_METHODS}, got {method!r}")
    calibration = calibration or DEFAULT_CALIBRATION
    sample_rate = as_feature_module(model).encoder.config.sample_rate
    speech = torch.from_numpy(held_out_speech(check_seconds, sample_rate))[None]
    lengths = torch.tensor([speech.shape[1]])
    target = Path(target)
    candidates: Dict[str, Path] = {}
    if method in ("dynamic", "fastest"):
        candidates["dynamic"] = quantize_onnx(source, target.with_name(f"{target.stem}.dynamic.onnx"))
    if method in ("static", "fastest"):
        candidates["static"] = quantize_onnx_static(source, target.with_name(f"{target.stem}.static.onnx"),
                                                    calibration_speech(calibration, sample_rate), sample_rate)
    errors = {name: relative_feature_error(model, path, [(speech, lengths)], threads)
              for name, path in candidates.items()}
    entry: Dict[str, Any] = {"tolerance": tolerance, "rel_l2_vs_fp32": errors, "threads": threads,
                             "check_seconds": check_seconds}
    try:
        usable = [name for name in candidates if errors[name] <= tolerance]
        if not usable:
            raise ValueError("no int8 model within the tolerance of {:g} % (relative L2 of the features from fp32 on "
                             "held-out speech): {}".format(100 * tolerance, ", ".join(
                                 f"{name} {100 * error:.2f} %" for name, error in errors.items())))
        if method == "fastest":
            sessions = {"fp32": inference_session(source, threads)}
            sessions.update({name: inference_session(candidates[name], threads) for name in usable})
            medians = time_interleaved({name: (lambda session=session: run_session(session, speech, lengths))
                                        for name, session in sessions.items()}, rounds, warmup=1)
            entry["latency_ms"] = {name: 1000 * value for name, value in medians.items()}
            chosen = min(usable, key=lambda name: medians[name])
            times = ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in sorted(medians.items(),
                                                                                      key=lambda item: item[1]))
            excluded = [name for name in candidates if name not in usable]
            entry["reason"] = (f"fastest int8 variant within the tolerance on this machine ({threads} thread(s), "
                               f"{check_seconds:g} s, batch 1): {times}"
                               + (f"; {', '.join(excluded)} excluded (features beyond the tolerance)" if excluded
                                  else ""))
        else:
            chosen = method
            entry["reason"] = f"requested (--onnx_int8 {method})"
        shutil.move(str(candidates[chosen]), str(target))
    finally:
        for path in candidates.values():
            path.unlink(missing_ok=True)
    entry.update(path=str(target), method=chosen, calibration=calibration if chosen == "static" else None)
    return entry


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
