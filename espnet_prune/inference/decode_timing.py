"""The whole decode timed as the user runs it: ESPnet's ``Speech2Text`` / ``Speech2Understand``.

A decoder is ESPnet's own inference object, built from an experiment's ``config.yaml`` and model
file (or random weights without one) and a decode config as asr.sh passes it (``beam_size``,
``ctc_weight``, ``lm_weight`` with an LM, ``penalty``, ``maxlenratio`` / ``minlenratio``; batch 1).
:func:`time_decodes` decodes the same utterances with every decoder in interleaved rounds and
takes per decoder the median over rounds of the whole decode and of the time spent inside
``model.frontend`` (forward hooks that add up wall time, outputs untouched).
:func:`summarize` turns those times into real-time factor, speed-up over the reference system,
the frontend's share of the decode, the cut of the frontend's MACs and speed-up / MAC cut.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_prune.utils.timing import time_interleaved

#: Speech2Text keyword arguments a decode config may set (asr_inference's decoding options).
DECODE_KEYS = ("beam_size", "ctc_weight", "lm_weight", "ngram_weight", "penalty", "maxlenratio", "minlenratio",
               "nbest", "normalize_length", "quantize_asr_model", "quantize_lm", "quantize_modules",
               "quantize_dtype", "dtype", "streaming", "time_sync")


@dataclass(frozen=True)
class DecodeSystem:
    """One system to decode.

    Args:
        name: its name in the results.
        train_config: the experiment's ``config.yaml``.
        model_file: its model file; ``None`` for random weights (the same for every system built
            with the same seed and config).
        lm_train_config, lm_file: an LM for shallow fusion (``lm_weight`` of the decode config).
    """

    name: str
    train_config: Path
    model_file: Optional[Path] = None
    lm_train_config: Optional[Path] = None
    lm_file: Optional[Path] = None


def read_decode_config(path: Optional[Path], overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """asr.sh's ``--inference_config`` YAML with ``--inference_args``-like ``overrides`` on top.

    Raises:
        ValueError: a key that is no decoding option of :data:`DECODE_KEYS` (named with the file).
    """
    import yaml

    config: Dict[str, Any] = {}
    if path is not None:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    config.update(overrides or {})
    unknown = sorted(set(config) - set(DECODE_KEYS))
    if unknown:
        raise ValueError(f"decode config {path}: keys {unknown} are not decoding options; known: {DECODE_KEYS}")
    return config


def build_decoder(task: str, system: DecodeSystem, decode_config: Mapping[str, Any], device: str = "cpu",
                  seed: int = 0):
    """ESPnet's ``Speech2Text`` (``task="asr"``) or ``Speech2Understand`` (``"slu"``) for ``system``,
    batch 1, with the plugin registered; torch's seed is set first so that random weights repeat."""
    from espnet_prune import register

    register()
    if task == "asr":
        from espnet2.bin.asr_inference import Speech2Text as Decoder
    elif task == "slu":
        from espnet2.bin.slu_inference import Speech2Understand as Decoder
    else:
        raise ValueError(f"task must be asr or slu, got {task!r}")
    torch.manual_seed(seed)
    kwargs = {f"{task}_train_config": str(system.train_config),
              f"{task}_model_file": None if system.model_file is None else str(system.model_file),
              "lm_train_config": None if system.lm_train_config is None else str(system.lm_train_config),
              "lm_file": None if system.lm_file is None else str(system.lm_file),
              "device": device, "batch_size": 1, **decode_config}
    decoder = Decoder(**kwargs)
    decoder.asr_model.eval()
    return decoder


def frontend_macs(model: torch.nn.Module, seconds: float) -> Optional[float]:
    """MACs of ``model.frontend`` on ``seconds`` of audio by :mod:`espnet_prune.ssl.cost` when it is
    a ``pruned_ssl`` frontend (``None`` for other frontends: they are not priced)."""
    from espnet_prune.ssl import cost
    from espnet_prune.ssl.config import EncoderConfig

    config = getattr(getattr(getattr(model, "frontend", None), "encoder", None), "config", None)
    if not isinstance(config, EncoderConfig):
        return None
    return float(cost.count_macs(config, seconds)["total"])


class FrontendClock:
    """Adds up the wall time spent in ``module.forward`` (pre- and post-forward hooks; outputs untouched).

    Args:
        module: the timed module (``model.frontend``).
        synchronize: called before reading the clock (``torch.cuda.synchronize`` on a GPU).
    """

    def __init__(self, module: torch.nn.Module, synchronize: Optional[Callable[[], None]] = None):
        self.seconds = 0.0
        self._start = 0.0
        self._synchronize = synchronize or (lambda: None)
        self._handles = [module.register_forward_pre_hook(self._enter), module.register_forward_hook(self._leave)]

    def _enter(self, module, inputs) -> None:
        self._synchronize()
        self._start = time.perf_counter()

    def _leave(self, module, inputs, output) -> None:
        self._synchronize()
        self.seconds += time.perf_counter() - self._start

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def decoded_steps(result: Sequence) -> int:
    """Search steps of an n-best result of ``Speech2Text`` (tokens between sos and eos of the best)."""
    if not result:
        return 0
    hyp = result[0][3]
    return max(0, len(hyp.yseq) - 2)


def time_decodes(decoders: Mapping[str, Any], utterances: Sequence[np.ndarray], rounds: int, warmup: int = 1,
                 device: str = "cpu", on_round: Optional[Callable[[int, Dict[str, float]], None]] = None
                 ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, List]]:
    """Decode every utterance with every decoder, interleaved (one decode of all utterances per
    decoder per round, rotating the order), after ``warmup`` untimed rounds.

    Args:
        decoders: name -> ``Speech2Text``-like object (callable on a ``(S,)`` waveform, ``asr_model``).
        utterances: ``(S,)`` float32 waveforms.
        rounds: timed rounds.
        device: ``cuda`` synchronizes before each clock reading.
    Returns:
        ``{name: {"decode_s", "frontend_s"}}`` (medians over rounds, all utterances together) and
        ``{name: [n-best result per utterance]}`` of the last round.
    """
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else None
    clocks = {name: FrontendClock(decoder.asr_model.frontend, synchronize) for name, decoder in decoders.items()}
    frontend: Dict[str, List[float]] = {name: [] for name in decoders}
    outputs: Dict[str, List] = {}

    def decode_all(name: str) -> None:
        if synchronize is not None:
            synchronize()
        clock = clocks[name]
        clock.seconds = 0.0
        outputs[name] = [decoders[name](speech) for speech in utterances]
        frontend[name].append(clock.seconds)

    try:
        medians = time_interleaved({name: (lambda name=name: decode_all(name)) for name in decoders}, rounds,
                                   warmup, rotate=True, on_round=on_round)
    finally:
        for clock in clocks.values():
            clock.close()
    times = {name: {"decode_s": medians[name], "frontend_s": float(np.median(frontend[name][warmup:]))}
             for name in decoders}
    return times, outputs


def summarize(times: Mapping[str, Mapping[str, float]], macs: Mapping[str, Optional[float]], audio_seconds: float,
              reference: str) -> Dict[str, Dict[str, Optional[float]]]:
    """Per system: ``decode_ms``, ``frontend_ms``, ``rtf`` (decode time / audio duration),
    ``speedup`` (the reference's decode time / this one's), ``frontend_share`` (frontend time /
    decode time), ``frontend_speedup``, ``macs``, ``mac_cut`` (the reference's frontend MACs / this
    one's; ``None`` when either is unpriced) and ``speedup_over_mac_cut``.

    Args:
        times: ``{name: {"decode_s", "frontend_s"}}`` as :func:`time_decodes` returns.
        macs: ``{name: frontend MACs or None}``.
        audio_seconds: total duration of the decoded audio.
        reference: the system the speed-ups are relative to (the dense one).
    """
    if reference not in times:
        raise ValueError(f"reference system {reference!r} is not among {sorted(times)}")
    if not audio_seconds > 0:
        raise ValueError(f"audio_seconds must be > 0, got {audio_seconds}")
    base = times[reference]
    base_macs = macs.get(reference)
    rows = {}
    for name, t in times.items():
        decode, front = t["decode_s"], t["frontend_s"]
        system_macs = macs.get(name)
        cut = base_macs / system_macs if base_macs and system_macs else None
        speedup = base["decode_s"] / decode
        rows[name] = dict(
            decode_ms=1000 * decode, frontend_ms=1000 * front, rtf=decode / audio_seconds, speedup=speedup,
            frontend_share=front / decode, frontend_speedup=base["frontend_s"] / front if front else math.nan,
            macs=system_macs, mac_cut=cut, speedup_over_mac_cut=None if cut is None else speedup / cut)
    return rows


def markdown_table(rows: Mapping[str, Mapping[str, Any]], reference: str) -> str:
    """The rows of :func:`summarize` (and ``tokens``, error rates, ``speedup_over_beam``,
    ``predicted_cut``, ``speedup_over_predicted_cut``, ``paired_speedup``,
    ``paired_speedup_over_predicted_cut``, the ONNX rows' ``identical`` and ``feature_rel_l2``,
    where present) as a markdown table; speed-ups are relative to ``reference`` (best-path rows: to
    the first best-path row)."""

    def number(value: Optional[float], pattern: str) -> str:
        return "–" if value is None else pattern.format(value)

    error_names = sorted({key for row in rows.values() for key in row if key in ("wer", "cer", "intent_acc")})
    over_beam = any("speedup_over_beam" in row for row in rows.values())
    predicted = any("predicted_cut" in row for row in rows.values())
    onnx = any("identical" in row for row in rows.values())
    header = ["system", "decode", "RTF", f"speed-up vs {reference}", "frontend share", "frontend speed-up",
              "frontend MAC cut", "speed-up / MAC cut", "tokens"] + error_names + (
                  ["best path vs beam search"] if over_beam else []) + (
                  ["predicted cut (in the budget's metric)", "speed-up / predicted cut", "paired speed-up",
                   "paired speed-up / predicted cut"] if predicted else []) + (
                  ["identical hyps vs PyTorch", "features rel. L2"] if onnx else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        cells = [name, f"{row['decode_ms']:.0f} ms", f"{row['rtf']:.3f}", f"×{row['speedup']:.2f}",
                 f"{100 * row['frontend_share']:.0f} %", number(row["frontend_speedup"], "×{:.2f}"),
                 number(row["mac_cut"], "×{:.2f}"), number(row["speedup_over_mac_cut"], "{:.2f}"),
                 str(row.get("tokens", "–"))]
        cells += [number(row.get(key), "{:.1%}") for key in error_names]
        if over_beam:
            cells.append(number(row.get("speedup_over_beam"), "×{:.2f}"))
        if predicted:
            cells += [number(row.get("predicted_cut"), "×{:.2f}"), number(row.get("speedup_over_predicted_cut"),
                                                                            "{:.2f}"),
                      number(row.get("paired_speedup"), "×{:.2f}"),
                      number(row.get("paired_speedup_over_predicted_cut"), "{:.2f}")]
        if onnx:
            cells += [number(row.get("identical"), "{:.1%}"), number(row.get("feature_rel_l2"), "{:.2%}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
