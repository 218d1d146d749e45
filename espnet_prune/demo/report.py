"""The demo's report: costs, CPU latency of every system in one run, ``results.json``, plot, table.

For each fine-tuned system the report gives the parameters and MACs of its SSL encoder (the
``pruned_ssl`` frontend, the part that is pruned) for ``reference_seconds`` of audio, as
counted by :mod:`espnet_prune.ssl.cost` (for a pruned system: read from its export report,
:class:`espnet_prune.export.report.ExportReport`), and their ratios to the dense encoder; the pruning
controller's final expected ratio of each budget next to the target; the whole ESPnet
model's parameter count; the error rates of stage 13; and the latency of the whole decode
(ESPnet's ``Speech2Text`` / ``Speech2Understand`` under the recipe's decode config with the
demo's beam: frontend, encoder, beam search) of one ``reference_seconds`` utterance, batch 1,
one CPU thread, with the time spent inside its frontend during that decode, both also as ratios to
the ``dense`` system's; beside each pruned system's budget (its metric, target and the exported
structure's ratio: of the whole decode's MACs for a whole-model budget) and, for a system trained
with a latency table, the frontend's latency ratio the table predicts (export's report). With an
LM, the fusion system's error rates and whole-decode latency with no LM,
the dense LM and every pruned LM (shallow fusion) follow, with the LMs' parameters and dev
perplexities from ``lm_prune``'s report. All decodes are timed in the same process, in
interleaved rounds (every decode once per round, the order rotating), and the median per decode
is reported. Every
compact pruned system's int8 decoding (ESPnet's ``--quantize_asr_model true``) is compared
with its fp32 one: identical hypotheses and the change of the error rate.

A multi-size system (``hj_macs_multi``: several sizes from one fine-tuning run) gives one row
per size; ``multisize`` in ``results.json`` sets each size beside the separate single-target run
at the same target (``hj_macs``), if the demo ran one: error, MACs and params of both, and the
fine-tuning time of the one run against the sum of the separate runs (wall and CPU seconds of
the training process, as the training step recorded them).

Systems that differ only by their fine-tuning seed (``hj_macs_0.50`` and ``hj_macs_0.50_seed1``)
are grouped in ``comparison`` (:mod:`espnet_prune.demo.claims`): every seed's error, MACs, params
and latency with their mean, minimum and maximum, and a verdict on each of the HJ-Pruning
paper's claims; the plot then draws each method as one line through its means, with the seeds'
range as bars.
"""

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
import torch

from espnet_prune.demo.claims import error_name, format_claims, group_runs, paper_claims
from espnet_prune.demo.layout import (
    INFERENCE_TAG,
    INT8_TAG,
    SSL_STANDIN,
    DemoPaths,
    decode_files,
    fusion_lms,
    training_time_file,
)
from espnet_prune.demo.settings import (
    METHODS,
    MULTI_SIZE_METHODS,
    SEPARATE_RUNS,
    UNPRUNED_METHODS,
    DemoError,
    DemoSettings,
)
from espnet_prune.demo.steps import Progress, format_seconds
from espnet_prune.export.report import ExportReport
from espnet_prune.inference.decode_timing import DecodeSystem, build_decoder, read_decode_config, time_decodes
from espnet_prune.lm.choices import target_name
from espnet_prune.ssl import cost
from espnet_prune.ssl.config import get_config
from espnet_prune.utils.kaldi_data import read_table

WARMUP_ROUNDS = 2
#: The system the measured latencies are divided by (when the demo runs it).
DENSE_REFERENCE = "dense"
#: Matplotlib markers of the methods, in the order of METHODS (repeated if there are more methods).
PLOT_MARKERS = "sxo^DvP<>"


@contextlib.contextmanager
def quiet():
    """Keep ESPnet's import chatter (nltk download attempts, FutureWarnings) off the terminal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield


def load_model(task: str, train_config: Path, model_file: Path):
    """An ESPnet ASR / SLU model in eval mode on CPU, with the plugin registered."""
    with quiet():
        from espnet_prune import register

        register()
        if task == "asr":
            from espnet2.tasks.asr import ASRTask as Task
        else:
            from espnet2.tasks.slu import SLUTask as Task
        model, _ = Task.build_model_from_file(str(train_config), str(model_file), "cpu")
    return model.eval()


def reference_waveform(test_dir: Path, seconds: float, sample_rate: int = 16000) -> torch.Tensor:
    """``(1, seconds * sample_rate)`` speech: the test utterances in order, joined and cut."""
    needed = int(round(seconds * sample_rate))
    pieces, total = [], 0
    for line in sorted((test_dir / "wav.scp").read_text(encoding="utf-8").splitlines()):
        samples, rate = soundfile.read(line.split(maxsplit=1)[1], dtype="float32")
        if rate != sample_rate:
            raise ValueError(f"{line}: {rate} Hz audio, expected {sample_rate} Hz")
        pieces.append(samples)
        total += len(samples)
        if total >= needed:
            break
    waveform = np.concatenate(pieces)
    if len(waveform) < needed:
        waveform = np.tile(waveform, -(-needed // len(waveform)))
    return torch.from_numpy(waveform[:needed]).unsqueeze(0)


def decode_latency(task: str, systems: Sequence[DecodeSystem], decode_config: Dict, waveform: torch.Tensor,
                   rounds: int, threads: int = 1) -> Dict[str, float]:
    """Median milliseconds of the whole decode of ``waveform`` per system (``decode_ms``): ESPnet's
    ``Speech2Text`` / ``Speech2Understand`` (frontend, encoder, beam search, LM under shallow fusion)
    under ``decode_config``, batch 1, every system once per round (rotating), through
    :func:`espnet_prune.inference.decode_timing.time_decodes`; and of the time spent inside its
    frontend during that decode (``frontend_ms``).

    Args:
        task: ``asr`` or ``slu``.
        systems: what to decode (an LM in a system is fused with ``decode_config``'s ``lm_weight``).
        decode_config: Speech2Text's decoding options (the recipe's decode YAML and the demo's beam).
        waveform: ``(1, S)`` input.
        rounds: timed rounds (after :data:`WARMUP_ROUNDS` untimed ones).
        threads: torch CPU threads while building and timing (restored after).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with quiet():
            decoders = {system.name: build_decoder(task, system, decode_config) for system in systems}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            times, _ = time_decodes(decoders, [waveform[0].numpy()], rounds, WARMUP_ROUNDS)
    finally:
        torch.set_num_threads(previous)
    return {name: {"decode_ms": 1000.0 * value["decode_s"], "frontend_ms": 1000.0 * value["frontend_s"]}
            for name, value in times.items()}


def demo_decode_config(settings: DemoSettings, paths: DemoPaths) -> Dict:
    """What stage 12 decodes with: the recipe's decode YAML, the demo's beam and LM weight."""
    overrides = {"beam_size": settings.beam_size}
    if settings.uses_lm:
        overrides["lm_weight"] = settings.lm_weight
    return read_decode_config(paths.conf(f"decode_{settings.task}.yaml"), overrides)


def add_latency(settings: DemoSettings, paths: DemoPaths, threads: int, systems: List[Dict],
                lm_fusion: Optional[Dict]) -> None:
    """Set ``latency_ms`` (the whole decode, :func:`decode_latency`) of every system and every
    shallow-fusion LM entry (the fusion system decoding with that LM; ``none``: without one),
    all timed in one interleaved run; for every system also ``frontend_latency_ms`` (its frontend's
    part of that decode) and, when the demo has a ``dense`` system, both as ratios to dense's
    (``latency_ratio``, ``frontend_latency_ratio``; ``None`` without one)."""
    specs = [DecodeSystem(entry["name"], Path(entry["train_config"]), Path(entry["model_file"]))
             for entry in systems]
    fusion_names = {}
    if lm_fusion is not None:
        fusion = next(entry for entry in systems if entry["name"] == lm_fusion["asr_system"])
        for entry in lm_fusion["entries"]:
            if entry["lm"] == "none":
                fusion_names["none"] = fusion["name"]
                continue
            name = f"{fusion['name']}+lm_{entry['lm']}"
            fusion_names[entry["lm"]] = name
            specs.append(DecodeSystem(name, Path(fusion["train_config"]), Path(fusion["model_file"]),
                                      Path(entry["lm_config"]), Path(entry["lm_file"])))
    waveform = reference_waveform(paths.dump("test"), settings.reference_seconds)
    latency = decode_latency(settings.task, specs, demo_decode_config(settings, paths), waveform,
                             settings.latency_rounds, threads)
    dense = latency.get(DENSE_REFERENCE) if any(entry["name"] == DENSE_REFERENCE for entry in systems) else None
    for entry in systems:
        measured = latency[entry["name"]]
        entry["latency_ms"], entry["frontend_latency_ms"] = measured["decode_ms"], measured["frontend_ms"]
        entry["latency_ratio"] = None if dense is None else measured["decode_ms"] / dense["decode_ms"]
        entry["frontend_latency_ratio"] = None if dense is None else measured["frontend_ms"] / dense["frontend_ms"]
    if lm_fusion is not None:
        for entry in lm_fusion["entries"]:
            entry["latency_ms"] = latency[fusion_names[entry["lm"]]]["decode_ms"]


def _read_json(path: Path) -> Dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: its stage did not finish")
    return json.loads(path.read_text(encoding="utf-8"))


def _score_fields(task: str, score: Dict) -> Dict[str, float]:
    fields = {"wer": score["wer"], "cer": score["cer"]}
    if task == "slu":
        fields["intent_acc"] = score["intent_acc"]
    return fields


def collect_systems(settings: DemoSettings, paths: DemoPaths) -> List[Dict]:
    """One entry per fine-tuned system (module docstring), latency not yet (:func:`add_latency`).

    A pruned system's numbers come from its export report (the compact encoder's cost, the
    model's parameters, the gates' expected ratios for the exported size); an unpruned one, which
    has no export, is loaded once to count them."""
    seconds = settings.reference_seconds
    dense_config = get_config(_read_json(paths.exp(SSL_STANDIN) / "ssl_encoder.json"))
    dense_params = cost.count_params(dense_config)["total"]
    dense_macs = cost.count_macs(dense_config, seconds)["total"]
    entries = []
    for system in settings.sizes():
        experiment = paths.exp(system.system.name)
        train_config, model_file = decode_files(paths, system)
        expected, size, budget = None, {}, dict(metric=None, exported_ratio=None, predicted_latency_ratio=None)
        if system.method in UNPRUNED_METHODS:
            model = load_model(settings.task, train_config, model_file)
            params = cost.count_params(model.frontend.encoder.config)["total"]
            macs = cost.count_macs(model.frontend.encoder.config, seconds)["total"]
            model_params = sum(p.numel() for p in model.parameters())
        else:
            export_report = ExportReport.read(model_file.with_suffix(".json"))
            if export_report.reference_seconds != seconds:
                raise DemoError(f"{model_file.with_suffix('.json')} counts MACs for {export_report.reference_seconds} "
                                f"s of audio, the demo for {seconds} s: export the system again")
            params, macs = export_report.total("params"), export_report.total("macs")
            model_params = export_report.model_params.after
            # The exported size's gates (for a size of several, from its snapshot).
            budgets = export_report.pruning.budgets
            expected = {name: round(float(entry.expected), 4) for name, entry in budgets.items()}
            # The budgets in their own metric (a whole-model budget: the whole decode's MACs), and the
            # frontend's latency that a latency table predicts (when the system was trained with one).
            budget = dict(metric=export_report.pruning.metric,
                          exported_ratio={name: round(float(entry.exported), 4) for name, entry in budgets.items()},
                          predicted_latency_ratio=export_report.encoder.ratio.get("latency", {}).get("total"))
            if system.size is not None:
                size = dict(system_name=system.system.name, size=system.size_dir, step=export_report.size.step)
        score = _read_json(paths.decode_dir(system.name) / "score.json")
        timing = training_time_file(experiment)
        entries.append(dict(
            name=system.name, method=system.method, target=system.target, seed=system.seed,
            expected_ratio=expected, **budget, **size,
            params=int(params), params_ratio=params / dense_params, macs=int(macs), macs_ratio=macs / dense_macs,
            reference_seconds=seconds, model_params=model_params,
            **_score_fields(settings.task, score), train_config=str(train_config), model_file=str(model_file),
            decode_dir=str(paths.decode_dir(system.name)),
            training=json.loads(timing.read_text(encoding="utf-8")) if timing.is_file() else None))
    return entries


def collect_lm_fusion(settings: DemoSettings, paths: DemoPaths) -> Optional[Dict]:
    """Error rates of the fusion system with no LM, the dense LM and each pruned LM."""
    if not settings.uses_lm:
        return None

    def score(tag: str) -> Dict[str, float]:
        return _score_fields(settings.task, _read_json(paths.decode_dir(settings.fusion_system, tag) / "score.json"))

    reports = {pruning.name: _read_json(paths.lm_pruned(pruning) / "report.json")
               for pruning in settings.lm_prunings}
    first_report = next(iter(reports.values()))
    dense_row = next(row for row in first_report["systems"] if row["name"] == "dense")
    test_ppl = float((paths.lm_exp / "perplexity_test" / "ppl").read_text(encoding="utf-8").strip())
    entries = [dict(lm="none", **score(INFERENCE_TAG))]
    for lm in fusion_lms(settings, paths):
        if lm["pruning"] is None:
            row, method = dense_row, "dense"
        else:
            rows = reports[lm["pruning"].name]["systems"]
            row = next(r for r in rows if r["name"] == target_name(lm["target"]))
            method = lm["pruning"].name
        entry = dict(lm=lm["name"], method=method, target=lm["target"], params=row["params"],
                     params_ratio=row["param_ratio"], dev_perplexity=row["perplexity"],
                     latency_ms_per_step=row["latency_ms_per_step"], **score(lm["inference_tag"]),
                     lm_config=str(lm["config"]), lm_file=str(lm["model_file"]))
        if lm["pruning"] is None:
            entry["test_perplexity"] = test_ppl
        entries.append(entry)
    return dict(asr_system=settings.fusion_system, lm_weight=settings.lm_weight, entries=entries)


def collect_multisize(settings: DemoSettings, systems: Sequence[Dict]) -> Optional[List[Dict]]:
    """Each multi-size system against the separate single-target runs at its targets.

    Per multi-size system: ``sizes``, one entry per size with the error rates, MACs and params
    (ratios too) of the size from the one run (``one_run``) and of the separate run at that
    target (``separate``, ``None`` if the demo ran none), and ``training``: the one run's and the
    separate runs' summed wall and CPU seconds and optimizer steps (``complete`` is false when a
    target has no separate run, so that the sum leaves it out).
    """
    keys = ["wer", "cer"] + (["intent_acc"] if settings.task == "slu" else [])
    fields = keys + ["macs", "macs_ratio", "params", "params_ratio", "expected_ratio", "latency_ms"]
    by_name = {entry["name"]: entry for entry in systems}
    comparisons = []
    for system in settings.systems:
        if system.method not in MULTI_SIZE_METHODS:
            continue
        separate_method = SEPARATE_RUNS[system.method]
        sizes, separate_runs = [], []
        for size in system.sizes:
            one = by_name[size.name]
            match = next((entry for entry in systems if entry["method"] == separate_method
                          and entry["target"] == size.target), None)
            sizes.append(dict(target=size.target, size=size.size_dir, one_run=dict(
                name=one["name"], step=one["step"], **{key: one[key] for key in fields}),
                separate=None if match is None else dict(name=match["name"], **{key: match[key] for key in fields}),
                difference=None if match is None else {key: one[key] - match[key] for key in keys}))
            if match is not None:
                separate_runs.append(match)
        one_training = by_name[system.sizes[0].name]["training"]

        def total(entries: Sequence[Dict]) -> Optional[Dict]:
            if not entries or any(entry["training"] is None for entry in entries):
                return None
            return {key: round(sum(entry["training"][key] for entry in entries), 2)
                    for key in ("wall_seconds", "cpu_seconds", "steps")}

        separate_total = total(separate_runs)
        training = dict(
            one_run=None if one_training is None else {key: one_training[key]
                                                       for key in ("wall_seconds", "cpu_seconds", "steps")},
            separate=separate_total, separate_runs=[entry["name"] for entry in separate_runs],
            complete=len(separate_runs) == len(system.sizes))
        if training["one_run"] is not None and separate_total is not None:
            training["ratio"] = {key: training["one_run"][key] / separate_total[key]
                                 for key in ("wall_seconds", "cpu_seconds", "steps") if separate_total[key]}
        comparisons.append(dict(
            system=system.name, method=system.method, targets=list(system.targets), separate_method=separate_method,
            schedule=dict(warmup_steps=settings.multisize_warmup_steps, hold_steps=settings.multisize_hold_steps,
                          total_steps=settings.training_steps(system),
                          separate_warmup_steps=settings.prune_warmup_steps,
                          separate_steps=settings.finetune_steps),
            sizes=sizes, training=training))
    return comparisons or None


def format_multisize(task: str, multisize: Optional[List[Dict]]) -> List[str]:
    """Markdown lines of the multi-size comparison (none without a multi-size system)."""
    if not multisize:
        return []
    key, label = ("intent_acc", "intent acc") if task == "slu" else ("wer", "WER")
    lines = []
    for comparison in multisize:
        schedule = comparison["schedule"]
        lines += ["", f"## Several sizes from one run: {comparison['system']} against separate "
                      f"{comparison['separate_method']} runs", "",
                  f"One run of {schedule['total_steps']} steps (per size: ramp {schedule['warmup_steps']}, hold "
                  f"{schedule['hold_steps']}) against one run per target of {schedule['separate_steps']} steps "
                  f"(ramp {schedule['separate_warmup_steps']}, then {schedule['hold_steps']} at the target).", "",
                  f"| target | one run: {label} | MACs | params | snapshot step | separate: {label} | MACs | params "
                  f"| {label} one run − separate |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for size in comparison["sizes"]:
            one, other = size["one_run"], size["separate"]
            row = (f"| {size['target']:.2f} | {100 * one[key]:.1f} % | {100 * one['macs_ratio']:.1f} % | "
                   f"{100 * one['params_ratio']:.1f} % | {one['step']} | ")
            if other is None:
                row += "– | – | – | – |"
            else:
                row += (f"{100 * other[key]:.1f} % | {100 * other['macs_ratio']:.1f} % | "
                        f"{100 * other['params_ratio']:.1f} % | {100 * size['difference'][key]:+.1f} |")
            lines.append(row)
        training = comparison["training"]
        lines += ["", "| fine-tuning | steps | wall | CPU |", "| --- | --- | --- | --- |"]
        for what, record in (("one run", training["one_run"]),
                             (f"separate runs ({', '.join(training['separate_runs']) or 'none'})",
                              training["separate"])):
            if record is None:
                lines.append(f"| {what} | – | – | – |")
            else:
                lines.append(f"| {what} | {record['steps']} | {format_seconds(record['wall_seconds'])} | "
                             f"{format_seconds(record['cpu_seconds'])} |")
        if not training["complete"]:
            lines.append("")
            lines.append("(not every target has a separate run: the sum covers those that have one)")
    return lines


def identical_hypotheses(first: Path, second: Path) -> Tuple[int, int]:
    """``(utterances with the same hypothesis in both, utterances in either)`` of two
    ``<utt_id> <text>`` files; an utterance missing from one file counts as different."""
    one, two = read_table(first, skip_empty_lines=True), read_table(second, skip_empty_lines=True)
    keys = set(one) | set(two)
    return sum(1 for key in keys if key in one and key in two and one[key] == two[key]), len(keys)


def collect_int8(settings: DemoSettings, paths: DemoPaths, systems: Sequence[str]) -> Optional[Dict]:
    """The int8 decodings of ``systems`` (compact pruned models) against their fp32 decodings.

    Per system: ``agreement`` (fraction of test utterances with the identical hypothesis), the
    fp32 and int8 error rates and their change (int8 minus fp32; intent accuracy for SLU), and
    which modules of the frontend ESPnet's ``--quantize_asr_model true`` quantizes (the same
    ``torch.quantization.quantize_dynamic`` call, :func:`espnet_prune.ssl.quantize.quantize_dynamic`).
    """
    from espnet_prune.ssl.quantize import quantization_summary, quantize_dynamic

    entries = []
    for system in settings.sizes():
        if system.name not in systems:
            continue
        fp32_dir, int8_dir = paths.decode_dir(system.name), paths.decode_dir(system.name, INT8_TAG)
        same, total = identical_hypotheses(fp32_dir / "text", int8_dir / "text")
        fp32_score = _score_fields(settings.task, _read_json(fp32_dir / "score.json"))
        int8_score = _score_fields(settings.task, _read_json(int8_dir / "score.json"))
        model = load_model(settings.task, *decode_files(paths, system))
        summary = quantization_summary(quantize_dynamic(model.frontend))
        entries.append(dict(
            name=system.name, utterances=total, identical=same, agreement=same / max(1, total),
            fp32=fp32_score, int8=int8_score,
            change={key: int8_score[key] - fp32_score[key] for key in fp32_score},
            frontend_modules=summary, decode_dir=str(int8_dir)))
    if not entries:
        return None
    return dict(what="compact pruned systems decoded with ESPnet's dynamic int8 quantization "
                     "(asr_inference / slu_inference --quantize_asr_model true: every torch.nn.Linear to qint8) "
                     "against their fp32 decoding of the same test set",
                entries=entries)


def format_int8(task: str, int8: Optional[Dict]) -> List[str]:
    """Lines of the int8-vs-fp32 table (none without int8 decodings)."""
    if int8 is None:
        return []
    key, label = ("intent_acc", "intent acc") if task == "slu" else ("wer", "WER")
    width = max([15] + [len(entry["name"]) for entry in int8["entries"]])
    header = (f"{'system (int8)':<{width}} {'identical hyps':>15} {label + ' fp32':>14} {label + ' int8':>14} "
              f"{'change':>8} {'int8 Linear':>11}")
    lines = ["", "Dynamic int8 quantization (--quantize_asr_model true) of the compact models:", header,
             "-" * len(header)]
    for entry in int8["entries"]:
        agreement = f"{entry['identical']}/{entry['utterances']} ({100 * entry['agreement']:.0f}%)"
        modules = entry["frontend_modules"]
        lines.append(f"{entry['name']:<{width}} {agreement:>15} {100 * entry['fp32'][key]:>13.1f}% "
                     f"{100 * entry['int8'][key]:>13.1f}% {100 * entry['change'][key]:>+7.1f}% "
                     f"{modules['int8_linear']:>5}/{modules['int8_linear'] + modules['float_linear']:<5}")
    return lines


def format_table(task: str, systems: Sequence[Dict], lm_fusion: Optional[Dict]) -> str:
    """The results as fixed-width text tables."""
    intent = f" {'intent acc':>10}" if task == "slu" else ""
    width = max([15] + [len(entry["name"]) for entry in systems])
    method_width = max([10] + [len(entry["method"]) for entry in systems])
    header = (f"{'system':<{width}} {'method':<{method_width}} {'target':>6} {'expected':>9} {'params':>9} "
              f"{'params%':>8} {'MACs':>9} {'MACs%':>7} {'latency':>9}{intent} {'WER':>6} {'CER':>6}")
    lines = [header, "-" * len(header)]
    for entry in systems:
        expected = entry["expected_ratio"]
        expected_text = "-" if not expected else "/".join(f"{value:.3f}" for value in expected.values())
        intent = f" {100 * entry['intent_acc']:>9.1f}%" if task == "slu" else ""
        lines.append(
            f"{entry['name']:<{width}} {entry['method']:<{method_width}} "
            f"{'-' if entry['target'] is None else format(entry['target'], '.2f'):>6} {expected_text:>9} "
            f"{entry['params'] / 1e6:>8.3f}M {100 * entry['params_ratio']:>7.1f}% {entry['macs'] / 1e6:>8.1f}M "
            f"{100 * entry['macs_ratio']:>6.1f}% {entry['latency_ms']:>7.2f}ms{intent} {100 * entry['wer']:>5.1f}% "
            f"{100 * entry['cer']:>5.1f}%")
    if lm_fusion is not None:
        lines += ["", f"Shallow fusion with system '{lm_fusion['asr_system']}' (lm_weight {lm_fusion['lm_weight']}):"]
        header = f"{'LM':<36} {'params':>9} {'params%':>8} {'dev ppl':>8} {'latency':>9} {'WER':>6} {'CER':>6}"
        lines += [header, "-" * len(header)]
        for entry in lm_fusion["entries"]:
            latency = f"{entry['latency_ms']:>7.2f}ms"
            if entry["lm"] == "none":
                lines.append(f"{'(no LM)':<36} {'-':>9} {'-':>8} {'-':>8} {latency} {100 * entry['wer']:>5.1f}% "
                             f"{100 * entry['cer']:>5.1f}%")
                continue
            lines.append(f"{entry['lm']:<36} {entry['params'] / 1e6:>8.3f}M {100 * entry['params_ratio']:>7.1f}% "
                         f"{entry['dev_perplexity']:>8.3f} {latency} {100 * entry['wer']:>5.1f}% "
                         f"{100 * entry['cer']:>5.1f}%")
    return "\n".join(lines)


def format_budgets(systems: Sequence[Dict]) -> List[str]:
    """Lines of the table that sets each pruned system's budget (its metric, target and the exported
    structure's ratio per budget; the frontend's latency ratio a latency table predicts) beside the
    measured latency ratios to the dense system (the frontend's part of the decode, and the whole
    decode). None without a pruned system."""
    pruned = [entry for entry in systems if entry["exported_ratio"]]
    if not pruned:
        return []

    def ratio(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3f}"

    width = max([15] + [len(entry["name"]) for entry in pruned])
    header = (f"{'system':<{width}} {'budget':<7} {'target':>6} {'exported':>17} {'predicted lat.':>14} "
              f"{'measured frontend':>17} {'measured decode':>15}")
    lines = ["", "Budgets and measured latency (ratios to dense; predicted: the latency table's, of the frontend):",
             header, "-" * len(header)]
    for entry in pruned:
        exported = "/".join(f"{name} {value:.3f}" for name, value in entry["exported_ratio"].items())
        lines.append(f"{entry['name']:<{width}} {entry['metric']:<7} {ratio(entry['target']):>6} {exported:>17} "
                     f"{ratio(entry['predicted_latency_ratio']):>14} {ratio(entry['frontend_latency_ratio']):>17} "
                     f"{ratio(entry['latency_ratio']):>15}")
    return lines


def plot_results(task: str, systems: Sequence[Dict], lm_fusion: Optional[Dict], path: Path,
                 groups: Optional[Sequence[Dict]] = None) -> Path:
    """Error (or intent accuracy) vs MACs ratio of the systems; with an LM, WER vs LM size too.
    With ``groups`` (several seeds, :func:`espnet_prune.demo.claims.group_runs`) every method is
    one line through its groups' means, with bars from the seeds' minimum to maximum and every seed
    as a small point; the dense model is a horizontal line with its seeds' band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if lm_fusion is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    axis = axes[0][0]
    key, label = ("intent_acc", "intent accuracy (%)") if task == "slu" else ("wer", "WER (%)")
    markers = {method: PLOT_MARKERS[index % len(PLOT_MARKERS)] for index, method in enumerate(METHODS)}
    if groups:
        _plot_groups(axis, task, groups, markers)
    for method, marker in markers.items():
        points = [entry for entry in systems if entry["method"] == method]
        if method in MULTI_SIZE_METHODS:
            # Every multi-size system is its own line through its sizes (one run).
            for name in dict.fromkeys(entry["system_name"] for entry in points):
                line = sorted((e for e in points if e["system_name"] == name), key=lambda e: e["macs_ratio"])
                axis.plot([100 * e["macs_ratio"] for e in line], [100 * e[key] for e in line], marker=marker,
                          markersize=8, linestyle="--", label=f"{name} (one run)")
        elif points and not groups:
            axis.scatter([100 * e["macs_ratio"] for e in points], [100 * e[key] for e in points], marker=marker,
                         s=60, label=method)
        for entry in points if not groups else ():
            axis.annotate(entry["name"], (100 * entry["macs_ratio"], 100 * entry[key]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")
    axis.set_xlabel("SSL encoder MACs (% of dense)")
    axis.set_ylabel(label)
    axis.set_title(f"{task.upper()}: error vs computation")
    axis.grid(alpha=0.3)
    axis.legend()
    if lm_fusion is not None:
        axis = axes[0][1]
        entries = lm_fusion["entries"]
        no_lm = next(e for e in entries if e["lm"] == "none")
        axis.axhline(100 * no_lm["wer"], color="gray", linestyle="--", label="no LM")
        methods: Dict[str, List[Dict]] = {}
        dense = next(e for e in entries if e["lm"] == "dense")
        for entry in entries:
            if entry["lm"] not in ("none", "dense"):
                methods.setdefault(entry["method"], []).append(entry)
        for method, points in methods.items():
            points = [dense] + sorted(points, key=lambda e: -e["params_ratio"])
            axis.plot([100 * e["params_ratio"] for e in points], [100 * e["wer"] for e in points], marker="o",
                      label=method)
        axis.set_xlabel("LM parameters (% of dense LM)")
        axis.set_ylabel("WER (%)")
        axis.set_title(f"shallow fusion with '{lm_fusion['asr_system']}'")
        axis.invert_xaxis()
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _plot_groups(axis, task: str, groups: Sequence[Dict], markers: Dict[str, str]) -> None:
    """The seeds' groups on ``axis`` (:func:`plot_results`), in the plot's unit (error or accuracy, %)."""
    def value(error: float) -> float:
        return 100 * (1.0 - error) if task == "slu" else 100 * error

    for method in dict.fromkeys(group["method"] for group in groups):
        line = sorted((group for group in groups if group["method"] == method), key=lambda g: g["mean"]["macs_ratio"])
        if method in UNPRUNED_METHODS:
            for group in line:
                low, high = sorted((value(group["min"]["error"]), value(group["max"]["error"])))
                drawn = axis.axhline(value(group["mean"]["error"]), linestyle=":", color="gray",
                                     label=f"{method} (n={len(group['runs'])})")
                axis.axhspan(low, high, color=drawn.get_color(), alpha=0.15)
            continue
        means = [value(group["mean"]["error"]) for group in line]
        bounds = [sorted((value(group["min"]["error"]), value(group["max"]["error"]))) for group in line]
        x = [100 * group["mean"]["macs_ratio"] for group in line]
        drawn = axis.errorbar(x, means, yerr=[[mean - low for mean, (low, _) in zip(means, bounds)],
                                              [high - mean for mean, (_, high) in zip(means, bounds)]],
                              marker=markers.get(method, "o"), capsize=3, label=method)
        seeds = [(100 * run["macs_ratio"], value(run["error"])) for group in line for run in group["runs"]]
        axis.scatter([point[0] for point in seeds], [point[1] for point in seeds], s=10, alpha=0.5,
                     color=drawn.lines[0].get_color())


def write_report(settings: DemoSettings, paths: DemoPaths, threads: int, progress: Progress, mode: str) -> Path:
    """Collect everything, write ``results.json`` and the plot beside it, print the table.

    Returns:
        The path of ``results.json``.
    """
    systems = collect_systems(settings, paths)
    lm_fusion = collect_lm_fusion(settings, paths)
    add_latency(settings, paths, threads, systems, lm_fusion)
    int8 = collect_int8(settings, paths, [size.name for size in settings.int8_sizes()])
    multisize = collect_multisize(settings, systems)
    groups = group_runs(settings.task, systems)
    several_seeds = any(len(group["runs"]) > 1 for group in groups)
    claims = paper_claims(settings.task, groups) if several_seeds else None
    plot = plot_results(settings.task, systems, lm_fusion, paths.results.with_suffix(".png"),
                        groups if several_seeds else None)
    results = dict(
        task=settings.task,
        mode=mode,
        settings=settings.as_dict(),
        corpus=_read_json(paths.data / "corpus.json"),
        reference_seconds=settings.reference_seconds,
        cost=dict(what="SSL encoder (pruned_ssl frontend) parameters and MACs, espnet_prune.ssl.cost",
                  dense_arch=str(paths.exp(SSL_STANDIN) / "ssl_encoder.json")),
        latency=dict(what="the whole decode (ESPnet's Speech2Text / Speech2Understand: frontend, encoder, beam "
                          "search, the LM under shallow fusion), CPU, batch 1, one utterance of "
                          f"{settings.reference_seconds} s, median over interleaved rounds "
                          "(espnet_prune.inference.decode_timing); frontend_latency_ms: the time inside the "
                          f"frontend during that decode; *_ratio: to the '{DENSE_REFERENCE}' system's",
                     latency_table=(str(paths.latency_table) if paths.latency_table.is_file() else None),
                     decode_config=demo_decode_config(settings, paths),
                     threads=threads, rounds=settings.latency_rounds, warmup_rounds=WARMUP_ROUNDS),
        systems=systems,
        lm_fusion=lm_fusion,
        int8=int8,
        multisize=multisize,
        comparison=dict(what=f"runs grouped by method and target over seeds; error: "
                             f"{error_name(settings.task)}; a difference counts where the seeds' "
                             "[min, max] intervals do not overlap",
                        groups=groups, claims=claims) if several_seeds else None,
        plot=str(plot),
        elapsed_seconds=round(progress.elapsed(), 1),
    )
    paths.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = "\n".join([format_table(settings.task, systems, lm_fusion)] + format_budgets(systems)
                      + format_int8(settings.task, int8))
    lines = format_multisize(settings.task, multisize)
    if several_seeds:
        lines += format_claims(settings.task, groups, claims)
    sections = "".join(f"{line}\n" for line in lines)
    (paths.results.with_name("RESULTS.md")).write_text(f"```\n{table}\n```\n{sections}", encoding="utf-8")
    progress.stream.write(f"\n{table}\n{sections}\n")
    return paths.results

