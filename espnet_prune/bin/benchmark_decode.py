"""What the user's decode gains: ESPnet's whole ``Speech2Text`` decode, dense against pruned, in one run.

    # trained experiments (config.yaml + model file each), real test utterances, error rates
    python -m espnet_prune.bin.benchmark_decode --system dense=exp/asr_dense \\
        --system hj_macs0.5=exp/asr_hj_macs0.5_pruned --data_dir dump/raw/test_clean \\
        --decode_config conf/decode_asr_ctc.yaml --output_dir exp/benchmark_decode
    # an LM for shallow fusion: NAME=ASR_EXP+LM_EXP (and lm_weight in the decode config)
    # random weights in a recipe's shape, the frontend uniformly pruned to 0.5 of its MACs
    python -m espnet_prune.bin.benchmark_decode --shape conformer --targets 0.5 --threads 1

Every system decodes the same utterances with ESPnet's ``Speech2Text`` (``Speech2Understand``
for SLU experiments), batch 1, under the decode config as asr.sh passes it (``--decode_config``,
then ``--decode_arg KEY=VALUE`` on top). Rounds interleave the systems (each decodes all
utterances once per round, the order rotating) after warm-up rounds; medians over rounds.
Per system: real-time factor, whole-decode speed-up over the first system, the frontend's share
of the decode (``model.frontend`` timed by hooks), the cut of the frontend's MACs
(:mod:`espnet_prune.ssl.cost`; frontends other than ``pruned_ssl`` are not priced) and speed-up /
MAC cut; with ``--data_dir`` also WER / CER (and intent accuracy for SLU) of the last round's
hypotheses against ``text``.

With random weights (``--shape``) the decode length is fixed: ``maxlenratio = -N`` and
``minlenratio = -(N - 1)`` (``--tokens N``) make ESPnet's beam search run exactly N steps,
dropping hypotheses that end earlier, so every system decodes N tokens; the number is checked.
``--best_path`` adds, per system, the CTC best path on the same model (``NAME_best_path``,
:mod:`espnet_prune.inference.ctc_greedy`, what ``ctc_greedy: true`` decodes), whose length is
what the posteriors give.

``--whole_targets T`` (with ``--shape``) adds systems pruned by a ``model_conf.pruning`` budget of T
(the structure its deterministic rounding gives, random weights): ``frontend_budget_T`` on the
frontend alone, ``whole_T`` on the whole decode's MACs, and with ``--whole_latency`` ``whole_latency_T``
on the whole decode's latency, priced by a decode latency table profiled first in the same run on
this machine (:mod:`espnet_prune.inference.decode_profile`; ``--latency_table`` reuses one; the table
goes into ``results.json``). Each gets ``predicted_cut`` (what its budget predicts for the whole
decode: the MAC cut, or the table's latency cut) and speed-up / predicted cut::

    python -m espnet_prune.bin.benchmark_decode --shape conformer --targets 0.5 --whole_targets 0.5 \
        --whole_latency --threads 1 --rounds 5

``--onnx METHOD`` (repeatable: ``fp32``, ``dynamic``, ``static``) adds, per ``--system`` whose
frontend is a compact ``pruned_ssl``, the same model with its frontend exported to ONNX and run by
onnxruntime (:class:`~espnet_prune.asr.frontend.onnx_export.OnnxFrontend`): ``NAME_onnx_fp32``, or its int8
copy (``NAME_onnx_dynamic``: onnxruntime's dynamic int8; ``NAME_onnx_static``: static int8
calibrated on ``--calibration`` speech, the ``export --onnx_int8 static`` file). Those rows also
give ``identical``, the fraction of utterances whose hypothesis equals NAME's (PyTorch fp32), and
``feature_rel_l2``, the relative L2 distance of their features from NAME's over the decoded
utterances::

    python -m espnet_prune.bin.benchmark_decode --system hj_macs0.5=exp/asr_hj_macs0.5_pruned \
        --data_dir dump/raw/test --onnx static --calibration dump/raw/train/wav.scp --rounds 1
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import yaml

from espnet_prune.export.compact import detect_task
from espnet_prune.inference import shapes
from espnet_prune.inference.decode_timing import (
    DecodeSystem,
    build_decoder,
    decoded_steps,
    frontend_macs,
    markdown_table,
    read_decode_config,
    summarize,
    time_decodes,
)

#: asr.sh's defaults of ``--inference_asr_model`` / ``--inference_lm``, tried before a lone ``*.pth``.
ASR_MODEL_NAME = "valid.acc.ave.pth"
LM_MODEL_NAME = "valid.loss.ave.pth"
#: Name suffix of the best-path decoders that ``--best_path`` adds.
BEST_PATH_SUFFIX = "_best_path"
#: ``--onnx`` methods: the ONNX frontend in fp32, onnxruntime's dynamic int8, static int8 calibrated on speech.
ONNX_METHODS = ("fp32", "dynamic", "static")


def experiment_files(path: Path, default_name: str) -> Tuple[Path, Path]:
    """``(config.yaml, model file)`` of an experiment: ``path`` is the model file (its directory
    holds ``config.yaml``) or the directory (``default_name`` in it, else its only ``*.pth``)."""
    if path.is_file():
        directory, model = path.parent, path
    elif path.is_dir():
        directory = path
        model = path / default_name
        if not model.is_file():
            candidates = sorted(path.glob("*.pth"))
            if len(candidates) != 1:
                raise FileNotFoundError(f"{path}: no {default_name} and {len(candidates)} *.pth files; "
                                        "name the model file")
            model = candidates[0]
    else:
        raise FileNotFoundError(f"{path} does not exist")
    config = directory / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing (an experiment directory holds config.yaml)")
    return config, model


def parse_system(spec: str) -> DecodeSystem:
    """``NAME=ASR_EXP`` or ``NAME=ASR_EXP+LM_EXP`` (directories or model files)."""
    name, sep, paths = spec.partition("=")
    if not sep or not name or not paths:
        raise ValueError(f"--system {spec!r}: expected NAME=EXPERIMENT[+LM_EXPERIMENT]")
    asr, _, lm = paths.partition("+")
    config, model = experiment_files(Path(asr), ASR_MODEL_NAME)
    lm_config = lm_model = None
    if lm:
        lm_config, lm_model = experiment_files(Path(lm), LM_MODEL_NAME)
    return DecodeSystem(name, config, model, lm_config, lm_model)


def parse_decode_args(items: Sequence[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` pairs, values read as YAML (``beam_size=10``, ``ctc_weight=0.3``)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--decode_arg {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


def parse_arch(text: str) -> Union[str, Dict[str, Any]]:
    """``--arch``: a preset name, or a JSON / YAML mapping (JSON first: YAML reads ``1e-05`` as a string)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.safe_load(text)


def read_utterances(data_dir: Path, limit: Optional[int]) -> Tuple[List[str], List[np.ndarray], Dict[str, str]]:
    """Utterance ids, ``(S,)`` float32 waveforms (16 kHz) and references of a Kaldi data directory."""
    import soundfile

    from espnet_prune.utils.kaldi_data import read_table

    for name in ("wav.scp", "text"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} is missing (a data directory has wav.scp and text)")
    wavs = read_table(data_dir / "wav.scp", skip_empty_lines=True)
    texts = read_table(data_dir / "text", skip_empty_lines=True)
    ids = sorted(wavs)[:limit] if limit else sorted(wavs)
    waveforms = []
    for utt in ids:
        samples, rate = soundfile.read(wavs[utt], dtype="float32")
        if rate != 16000:
            raise ValueError(f"{wavs[utt]} ({utt}): {rate} Hz audio, the models take 16000 Hz")
        waveforms.append(samples)
    missing = [utt for utt in ids if utt not in texts]
    if missing:
        raise ValueError(f"{data_dir / 'text'} has no reference for {missing[:5]}")
    return ids, waveforms, {utt: texts[utt] for utt in ids}


def add_best_path(decoders: Dict[str, Any]) -> Dict[str, Any]:
    """Each decoder followed by ``<name>_best_path``: the CTC best path on the same model
    (:class:`~espnet_prune.inference.ctc_greedy.CTCBestPath`)."""
    from espnet_prune.inference.ctc_greedy import CTCBestPath

    extended = {}
    for name, decoder in decoders.items():
        extended[name] = decoder
        extended[f"{name}{BEST_PATH_SUFFIX}"] = CTCBestPath(decoder)
    return extended


def hypothesis_text(result: Sequence) -> str:
    """The best hypothesis of a ``Speech2Text`` n-best result as text ("" for no result)."""
    if not result:
        return ""
    text = result[0][0]
    return text if text is not None else " ".join(result[0][1])


def identical_fraction(reference: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Fraction of positions where ``hypotheses`` equals ``reference`` (same utterances, same order).

    Raises:
        ValueError: the two differ in length, or are empty.
    """
    if len(reference) != len(hypotheses) or not reference:
        raise ValueError(f"identical_fraction needs two equally long, non-empty lists, got {len(reference)} "
                         f"and {len(hypotheses)} hypotheses")
    return sum(1 for one, two in zip(reference, hypotheses) if one == two) / len(reference)


def onnx_decoders(task: str, systems: Sequence[DecodeSystem], decoders: Dict[str, Any], methods: Sequence[str],
                  calibration: str, decode_config: Dict[str, Any], device: str, threads: int,
                  work_dir: Path) -> Dict[str, Tuple[str, Path]]:
    """Add to ``decoders``, per system whose frontend is a compact ``pruned_ssl`` and per method of
    :data:`ONNX_METHODS`, ``<name>_onnx_<method>``: the system built again with its frontend replaced
    by onnxruntime running the frontend's ONNX export (fp32) or its int8 copy. Returns
    ``{new name: (system name, .onnx file)}``.

    Raises:
        ValueError: an unknown method, or no system with a compact ``pruned_ssl`` frontend.
    """
    from espnet_prune.asr.frontend.calibration import calibration_speech
    from espnet_prune.asr.frontend.onnx_export import OnnxFrontend, export_onnx, quantize_onnx, quantize_onnx_static
    from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend

    unknown = sorted(set(methods) - set(ONNX_METHODS))
    if unknown:
        raise ValueError(f"--onnx {unknown}: methods are {ONNX_METHODS}")
    added: Dict[str, Tuple[str, Path]] = {}
    speech = None
    for system in systems:
        frontend = decoders[system.name].asr_model.frontend
        if not isinstance(frontend, PrunedSSLFrontend) or frontend.controller is not None:
            continue
        source = export_onnx(frontend, work_dir / system.name / "frontend.onnx")
        sample_rate = frontend.encoder.config.sample_rate
        for method in methods:
            if method == "fp32":
                path = source
            elif method == "dynamic":
                path = quantize_onnx(source, source.with_name("frontend.dynamic.onnx"))
            else:
                if speech is None:
                    speech = calibration_speech(calibration, sample_rate)
                path = quantize_onnx_static(source, source.with_name("frontend.static.onnx"), speech, sample_rate)
            decoder = build_decoder(task, system, decode_config, device)
            decoder.asr_model.frontend = OnnxFrontend(path, threads)
            name = f"{system.name}_onnx_{method}"
            decoders[name] = decoder
            added[name] = (system.name, path)
    if not added:
        raise ValueError("--onnx needs a --system whose frontend is a compact pruned_ssl (an exported model)")
    return added


def add_onnx_agreement(rows: Dict[str, Dict[str, Any]], outputs: Dict[str, List], onnx: Dict[str, Tuple[str, Path]],
                       decoders: Dict[str, Any], utterances: Sequence[np.ndarray], threads: int) -> None:
    """Give each ONNX row ``identical`` (fraction of hypotheses equal to its PyTorch system's),
    ``onnx_of`` and ``feature_rel_l2`` (its features against the PyTorch frontend's, relative L2
    over the valid frames of every utterance)."""
    from espnet_prune.asr.frontend.onnx_export import relative_feature_error

    batches = [(torch.from_numpy(np.asarray(u, dtype=np.float32))[None], torch.tensor([len(u)])) for u in utterances]
    for name, (system, path) in onnx.items():
        rows[name]["onnx_of"] = system
        rows[name]["identical"] = identical_fraction([hypothesis_text(r) for r in outputs[system]],
                                                     [hypothesis_text(r) for r in outputs[name]])
        rows[name]["feature_rel_l2"] = relative_feature_error(decoders[system].asr_model.frontend, path, batches,
                                                              threads)


def random_decoders(shape: str, targets: Sequence[float], arch: Union[str, Dict[str, Any]], seconds: float,
                    tokens: int, vocabulary: int, small: bool, work_dir: Path, device: str,
                    decode_overrides: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Dense and compact (frontend uniformly pruned to each MAC ratio of ``targets``, see
    :func:`espnet_prune.bin.benchmark_ssl.compact_at`) random-weight decoders of ``shape``; the
    same seed gives every system the same downstream weights. Returns decoders and the decode config."""
    from espnet_prune.bin.benchmark_ssl import compact_at

    config = shapes.train_config(shape, arch, vocabulary, small)
    train_config = shapes.write_train_config(config, work_dir / shape / "config.yaml")
    decode_config = dict(shapes.DECODE_CONFIGS[shape])
    decode_config.update(maxlenratio=-float(tokens), minlenratio=-float(tokens - 1))
    decode_config.update(decode_overrides)
    decoders = {"dense": build_decoder("asr", DecodeSystem("dense", train_config), decode_config, device)}
    for target in targets:
        decoder = build_decoder("asr", DecodeSystem(f"frontend_{target:g}", train_config), decode_config, device)
        frontend = decoder.asr_model.frontend
        with torch.no_grad():
            frontend.encoder = compact_at(frontend.encoder.cpu(), target, seconds).to(device).eval()
        decoders[f"frontend_{target:g}"] = decoder
    return decoders, decode_config


def profile_shape(shape: str, arch: Union[str, Dict[str, Any]], seconds: float, tokens: int, vocabulary: int,
                  small: bool, work_dir: Path, device: str, decode_config: Dict[str, Any], rounds: int) -> Path:
    """Profile the decode latency table of ``shape`` priced for ``decode_config`` on this machine
    (:func:`espnet_prune.inference.decode_profile.profile_decode`, what ``profile_decode_latency``
    does for an experiment) and write it to ``work_dir/decode_latency.json``."""
    from espnet_prune.inference.budget_shapes import budget_pruning, whole_model_train_config
    from espnet_prune.inference.decode_profile import profile_decode
    from espnet_prune.pruning.decode_latency import describe, save_table

    pruning = budget_pruning(["frontend", "encoder", "decoder", "ctc"], 0.5, seconds, decode_config, tokens)
    config = whole_model_train_config(shape, arch, vocabulary or shapes.VOCABULARY[shape], small, pruning)
    gated = shapes.write_train_config(config, work_dir / "profile" / "config.yaml")
    table = profile_decode(gated, work_dir / "profile", rounds=rounds, device=device,
                           progress=lambda line: print(f"decode latency table: {line}", flush=True))
    path = work_dir / "decode_latency.json"
    save_table(table, path)
    print(f"decode latency table: {describe(table)}", flush=True)
    return path


def budget_decoders(shape: str, targets: Sequence[float], arch: Union[str, Dict[str, Any]], seconds: float,
                    tokens: int, vocabulary: int, small: bool, work_dir: Path, device: str,
                    decode_config: Dict[str, Any], latency_table: Optional[Path] = None
                    ) -> Tuple[Dict[str, Any], Dict[str, float]]:
    """For each target t: ``frontend_budget_t`` (a ``model_conf.pruning`` budget of t on the frontend
    alone) and ``whole_t`` (t of the whole decode's MACs: frontend, encoder, decoder x beam, CTC),
    with ``latency_table`` (a decode latency table of the shape) also ``whole_latency_t`` (t of the
    whole decode's latency the table predicts); random weights compacted to the structure the
    budget's deterministic rounding gives (:func:`espnet_prune.inference.budget_shapes.
    budget_experiment`). Returns the decoders and each one's predicted cut of the whole decode:
    dense MACs / its MACs, for the latency budget dense latency / its latency (both predicted)."""
    from espnet_prune.inference.budget_shapes import budget_experiment

    decoders, predicted = {}, {}
    vocabulary = vocabulary or shapes.VOCABULARY[shape]
    every = ["frontend", "encoder", "decoder", "ctc"]
    for target in targets:
        systems = [(f"frontend_budget_{target:g}", ["frontend"], "macs"), (f"whole_{target:g}", every, "macs")]
        if latency_table is not None:
            systems.append((f"whole_latency_{target:g}", every, "latency"))
        for name, parts, metric in systems:
            config, model, info = budget_experiment(shape, arch, vocabulary, small, parts, target, seconds,
                                                    decode_config, tokens, work_dir / name, metric,
                                                    latency_table if metric == "latency" else None)
            ratios = ", ".join(f"{part} x{info[part + '_ratio']:.3f}" for part in every if part + "_ratio" in info)
            line = (f"{name}: budget ratio {info['budget_ratio']:.3f} (target {target:g}), whole-decode MACs "
                    f"x{info['decode_ratio']:.3f} of dense ({ratios})")
            predicted[name] = 1.0 / info["decode_ratio"]
            if metric == "latency":
                predicted[name] = info["dense_latency_ms"] / info["latency_ms"]
                line += f", predicted decode {info['dense_latency_ms']:.0f} -> {info['latency_ms']:.0f} ms"
            print(line, flush=True)
            decoders[name] = build_decoder("asr", DecodeSystem(name, config, model), decode_config, device)
    return decoders, predicted


def benchmark(decoders: Dict[str, Any], utterances: Sequence[np.ndarray], rounds: int, warmup: int = 1,
              device: str = "cpu", references: Optional[Dict[str, str]] = None, ids: Optional[Sequence[str]] = None,
              task: str = "asr", non_linguistic_symbols: Sequence[str] = (), cleaner: Optional[str] = None,
              verbose: bool = True, onnx: Optional[Dict[str, Tuple[str, Path]]] = None
              ) -> Dict[str, Dict[str, Any]]:
    """Time the decoders (:func:`~espnet_prune.inference.decode_timing.time_decodes`) and summarize
    them against the first one (best-path decoders, ``*_best_path``, against the first of them, and
    ``speedup_over_beam``: the beam search on the same model over the best path; beam-search rows
    also get ``paired_speedup``, the median over rounds of the first one's time over this one's in
    the same round); each row also
    gets ``tokens`` (decode steps per utterance, summed) and, with ``references``, ``wer`` / ``cer``
    (``intent_acc`` for SLU); the ONNX rows of ``onnx`` (:func:`onnx_decoders`) also their
    agreement with their PyTorch system (:func:`add_onnx_agreement`)."""
    audio_seconds = sum(len(u) for u in utterances) / 16000

    per_round: List[Dict[str, float]] = []

    def progress(index: int, seconds: Dict[str, float]) -> None:
        per_round.append(dict(seconds))
        if verbose:
            print(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {1000 * t:.0f} ms" for n, t in seconds.items()),
                  flush=True)

    times, outputs = time_decodes(decoders, utterances, rounds, warmup, device, progress)
    macs = {name: frontend_macs(decoder.asr_model, audio_seconds / len(utterances))
            for name, decoder in decoders.items()}
    # Best-path decoders are compared with each other (the first is their reference) and with
    # the beam search on the same model.
    best = [name for name in decoders if name.endswith(BEST_PATH_SUFFIX)]
    beam = [name for name in decoders if name not in best]
    rows = summarize({name: times[name] for name in beam}, macs, audio_seconds, beam[0])
    if best:
        best_rows = summarize({name: times[name] for name in best}, macs, audio_seconds, best[0])
        for name in best:
            beam_name = name[: -len(BEST_PATH_SUFFIX)]
            best_rows[name]["speedup_over_beam"] = times[beam_name]["decode_s"] / times[name]["decode_s"]
        rows = {name: (rows.get(name) or best_rows[name]) for name in decoders}
    for name in beam:  # on a shared machine the load drifts between rounds, less within one
        rows[name]["paired_speedup"] = float(np.median([round_[beam[0]] / round_[name] for round_ in per_round]))
    for name, results in outputs.items():
        rows[name]["tokens"] = sum(decoded_steps(result) for result in results)
        if references is not None:
            from espnet_prune.demo.scoring import error_rate, intent_accuracy

            hyps = {utt: hypothesis_text(result) for utt, result in zip(ids, results)}
            rows[name]["wer"] = error_rate(references, hyps, "word", non_linguistic_symbols, cleaner).rate
            rows[name]["cer"] = error_rate(references, hyps, "char", non_linguistic_symbols, cleaner).rate
            if task == "slu":
                rows[name]["intent_acc"] = intent_accuracy(references, hyps)
    if onnx:
        add_onnx_agreement(rows, outputs, onnx, decoders, utterances, torch.get_num_threads())
    return rows


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", action="append", default=[],
                        help="NAME=EXPERIMENT[+LM_EXPERIMENT] (a directory with config.yaml and the model, "
                             f"{ASR_MODEL_NAME} / {LM_MODEL_NAME} or its only *.pth, or the model file); the "
                             "first is the reference")
    parser.add_argument("--shape", choices=shapes.SHAPES, default=None,
                        help="random weights in this shape instead of --system (dense and --targets)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5],
                        help="with --shape: MAC ratios of the compact frontends")
    parser.add_argument("--whole_targets", type=float, nargs="+", default=[],
                        help="with --shape: also systems pruned by a model_conf.pruning budget of each MAC ratio, "
                             "on the frontend alone (frontend_budget_T) and on the whole decode (whole_T), "
                             "each with the predicted cut of the whole decode's MACs")
    parser.add_argument("--whole_latency", action="store_true",
                        help="with --whole_targets: also whole_latency_T, a budget of T of the whole decode's "
                             "latency, from a decode latency table profiled in this run on this machine (or "
                             "--latency_table)")
    parser.add_argument("--latency_table", type=Path, default=None,
                        help="with --whole_latency: this decode latency table (profile_decode_latency of the same "
                             "shape, seconds, tokens and decoding) instead of profiling one")
    parser.add_argument("--arch", default="wav2vec2_base",
                        help="with --shape: the SSL frontend's preset, or a JSON / YAML mapping of "
                        "EncoderConfig values ('{preset: wav2vec2_base, num_layers: 2}')")
    parser.add_argument("--tokens", type=int, default=30, help="with --shape: decoded tokens per utterance")
    parser.add_argument("--vocabulary", type=int, default=0, help="with --shape: output tokens (0: the shape's)")
    parser.add_argument("--small", action="store_true", help="with --shape: 1-block downstream networks (tests)")
    parser.add_argument("--decode_config", type=Path, default=None,
                        help="decode config (asr.sh's --inference_config); with --shape the shape's")
    parser.add_argument("--decode_arg", action="append", default=[], help="KEY=VALUE over the decode config")
    parser.add_argument("--best_path", action="store_true",
                        help="also decode every system by the CTC best path (NAME_best_path; the same model)")
    parser.add_argument("--onnx", action="append", choices=ONNX_METHODS, default=[],
                        help="with --system: also decode each compact pruned_ssl system with its frontend in "
                             "onnxruntime (fp32, dynamic int8, or static int8 calibrated on --calibration); "
                             "reports the fraction of hypotheses identical to the PyTorch decode")
    parser.add_argument("--calibration", default=None,
                        help="with --onnx static: calibration speech, synth:N or a wav.scp (default: the deploy "
                             "path's, espnet_prune.asr.frontend.calibration.DEFAULT_CALIBRATION)")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="Kaldi data directory (wav.scp, text) to decode and score")
    parser.add_argument("--max_utterances", type=int, default=None, help="decode the first N of --data_dir")
    parser.add_argument("--seconds", type=float, default=5.0, help="without --data_dir: one utterance this long")
    parser.add_argument("--nlsyms_txt", default=None, help="non-linguistic symbols removed before scoring")
    parser.add_argument("--cleaner", default=None, help="ESPnet text cleaner of the references")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--output_dir", type=Path, default=None, help="write results.json and results.md here")
    return parser


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """The benchmark of the parsed command line; returns what ``results.json`` holds."""
    import tempfile

    if bool(args.system) == bool(args.shape):
        raise ValueError("give either --system (at least one) or --shape")
    if (args.whole_latency or args.latency_table) and not args.whole_targets:
        raise ValueError("--whole_latency / --latency_table price the --whole_targets systems; give --whole_targets")
    if args.latency_table is not None and not args.whole_latency:
        raise ValueError("--latency_table is the table of --whole_latency; give --whole_latency")
    if args.onnx and not args.system:
        raise ValueError("--onnx decodes trained --system experiments (an exported compact model)")
    if args.calibration and not args.calibration.startswith("synth:") and not Path(args.calibration).is_file():
        raise ValueError(f"--calibration {args.calibration} is neither synth:N nor an existing wav.scp")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_decode_args(args.decode_arg)
    ids = references = None
    predicted: Dict[str, float] = {}
    latency_table = None
    if args.data_dir is not None:
        ids, utterances, references = read_utterances(args.data_dir, args.max_utterances)
    else:
        generator = torch.Generator().manual_seed(0)
        utterances = [(0.1 * torch.randn(int(args.seconds * 16000), generator=generator)).numpy()]
    onnx = None
    with tempfile.TemporaryDirectory() as work_dir:
        if args.shape:
            if args.tokens < 2:
                raise ValueError(f"--tokens must be >= 2, got {args.tokens}")
            if args.decode_config is not None:
                overrides = {**read_decode_config(args.decode_config), **overrides}
            decoders, decode_config = random_decoders(
                args.shape, args.targets, parse_arch(args.arch), len(utterances[0]) / 16000, args.tokens,
                args.vocabulary, args.small, Path(work_dir), args.device, overrides)
            if args.whole_targets:
                seconds = len(utterances[0]) / 16000
                table = args.latency_table
                if args.whole_latency and table is None:
                    table = profile_shape(args.shape, parse_arch(args.arch), seconds, args.tokens, args.vocabulary,
                                          args.small, Path(work_dir), args.device, decode_config, args.rounds)
                if table is not None:
                    from espnet_prune.pruning.decode_latency import load_table

                    latency_table = load_table(table, "--latency_table")
                budgeted, predicted = budget_decoders(
                    args.shape, args.whole_targets, parse_arch(args.arch), seconds, args.tokens,
                    args.vocabulary, args.small, Path(work_dir), args.device, decode_config,
                    table if args.whole_latency else None)
                decoders.update(budgeted)
                predicted = {"dense": 1.0, **predicted}
            task = "asr"
            # The fixed length is meant: ESPnet's warning that the hypothesis reached it is not news.
            logging.getLogger("espnet.nets.beam_search").setLevel(logging.ERROR)
        else:
            systems = [parse_system(spec) for spec in args.system]
            tasks = {detect_task(system.train_config) for system in systems}
            if len(tasks) != 1:
                raise ValueError("--system mixes ASR and SLU experiments")
            task = tasks.pop()
            decode_config = read_decode_config(args.decode_config, overrides)
            decoders = {system.name: build_decoder(task, system, decode_config, args.device) for system in systems}
        if args.onnx:
            from espnet_prune.asr.frontend.calibration import DEFAULT_CALIBRATION

            onnx = onnx_decoders(task, systems, decoders, list(dict.fromkeys(args.onnx)),
                                 args.calibration or DEFAULT_CALIBRATION, decode_config, args.device,
                                 torch.get_num_threads(), Path(work_dir))
        if args.best_path:
            decoders = add_best_path(decoders)
        from espnet_prune.demo.scoring import read_symbols

        rows = benchmark(decoders, utterances, args.rounds, args.warmup, args.device, references, ids, task,
                         read_symbols(args.nlsyms_txt), args.cleaner, onnx=onnx)
    for name, cut in predicted.items():
        rows[name]["predicted_cut"] = cut
        rows[name]["speedup_over_predicted_cut"] = rows[name]["speedup"] / cut
        rows[name]["paired_speedup_over_predicted_cut"] = rows[name]["paired_speedup"] / cut
    if args.shape:
        counts = {name: row["tokens"] for name, row in rows.items() if not name.endswith(BEST_PATH_SUFFIX)}
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"the systems decoded different numbers of tokens: {counts}")
    return dict(
        systems=rows, reference=next(iter(rows)), task=task, decode_config=decode_config,
        shape=args.shape, arch=args.arch if args.shape else None,
        utterances=len(utterances), audio_seconds=sum(len(u) for u in utterances) / 16000,
        rounds=args.rounds, warmup=args.warmup, threads=torch.get_num_threads(), device=args.device,
        decode_latency_table=latency_table,
        timing="medians over interleaved rounds (each system decodes every utterance once per round)")


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    try:
        results = run(args)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"benchmark_decode: {error}") from None
    table = markdown_table(results["systems"], results["reference"])
    print(f"{results['utterances']} utterance(s), {results['audio_seconds']:.1f} s of audio, "
          f"{results['threads']} thread(s), {results['device']}, decode config {results['decode_config']}")
    print(table, end="")
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        (args.output_dir / "results.md").write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
