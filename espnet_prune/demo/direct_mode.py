"""Direct mode of the demo: ESPnet's binaries in asr.sh's stage order (no egs2 TEMPLATE needed).

Without ``ESPNET_ROOT`` (ESPnet from PyPI has no egs2 TEMPLATE) the stages of ``asr.sh`` run as
the very ESPnet binaries ``asr.sh`` calls, in its order, through the plugin launcher
(``python -m espnet_prune -m espnet2.bin.<tool>``), into asr.sh's layout
(:class:`~espnet_prune.demo.layout.DemoPaths`): stage 1 data (:mod:`~espnet_prune.demo.corpus`),
3-4 format and filter (Kaldi data directories edited with :mod:`espnet_prune.utils.kaldi_data`),
5 token list (``tokenize_text``), 6-8 LM statistics, training and perplexity, 10 ASR
statistics, 11 training (the SSL stand-in, the latency table of its encoder when a system prunes to a
latency, then every system), export of the compact models
(``espnet_prune.bin.export``; every size of a multi-size system), 12 decoding (and int8
decoding of every compact model, shallow fusion of every LM for one system), 13 scoring.
Stages 2 (speed perturbation) and 9 (n-gram) are off, as in the recipe.
"""

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import soundfile

from espnet_prune.demo import corpus as corpus_module
from espnet_prune.demo.layout import (
    INFERENCE_TAG,
    INT8_TAG,
    SSL_STANDIN,
    decode_files,
    final_model_file,
    fusion_lms,
)
from espnet_prune.demo.recipe import (
    DemoRecipe,
    copy_committed_standin,
    latency_table_steps,
    lm_pruning_steps,
    training_after,
)
from espnet_prune.demo.settings import UNPRUNED_METHODS, System, SystemSize
from espnet_prune.demo.steps import SERIAL_PRIORITY, Step
from espnet_prune.export.report import ExportReport
from espnet_prune.utils import kaldi_data

MIN_WAV_SECONDS, MAX_WAV_SECONDS = 0.1, 20.0  # asr.sh's min_wav_duration / max_wav_duration


def format_data_dir(source: Path, target: Path, text_files: Sequence[str]) -> int:
    """Stage 3 for a raw 16 kHz corpus: copy the data dir, write ``utt2num_samples`` and ``feats_type``.

    (asr.sh's ``format_wav_scp.sh`` would re-encode the audio; these wav files already are
    what ESPnet reads.) Returns the number of utterances.
    """
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("wav.scp", "utt2spk", "spk2utt", *text_files):
        shutil.copyfile(source / name, target / name)
    wav_scp = kaldi_data.read_table(source / "wav.scp")
    samples = {utt_id: soundfile.info(path).frames for utt_id, path in wav_scp.items()}
    kaldi_data.write_table(target / "utt2num_samples", samples)
    (target / "feats_type").write_text("raw\n", encoding="utf-8")
    return len(samples)


def filter_data_dir(source: Path, target: Path, text_files: Sequence[str], sample_rate: int = 16000) -> int:
    """Stage 4: keep utterances of ``MIN_WAV_SECONDS`` < duration < ``MAX_WAV_SECONDS`` with non-empty text.

    Returns the number kept.
    """
    lengths = kaldi_data.read_table(source / "utt2num_samples")
    texts = kaldi_data.read_table(source / "text")
    keep = {utt for utt, samples in lengths.items()
            if MIN_WAV_SECONDS * sample_rate < int(samples) < MAX_WAV_SECONDS * sample_rate and texts.get(utt)}
    kaldi_data.subset_data_dir(source, target, keep, ("wav.scp", "utt2num_samples", "utt2spk", *text_files),
                               copy=("feats_type",))
    return len(keep)


def direct_steps(recipe: DemoRecipe) -> List[Step]:
    """The steps of direct mode (module docstring)."""
    settings, paths, task = recipe.settings, recipe.paths, recipe.task
    text_files = ["text"] + (["transcript"] if task == "slu" else [])
    steps: List[Step] = []

    def data() -> str:
        if paths.data.exists():
            shutil.rmtree(paths.data)
        corpus = corpus_module.make_corpus(
            paths.data, task=task, num_train=settings.num_train, num_dev=settings.num_dev,
            num_test=settings.num_test, num_lm_sentences=settings.num_lm_sentences,
            num_dev_voices=settings.num_dev_voices, num_test_voices=settings.num_test_voices,
            seed=settings.seed, num_workers=recipe.lanes)
        summary = json.loads((corpus.root / "corpus.json").read_text(encoding="utf-8"))
        return ", ".join(f"{split} {summary[f'num_{split}']} utts ({60 * summary['hours'][split]:.1f} min, "
                         f"{len(summary['voices'][split])} voices)" for split in corpus_module.SPLITS)

    steps.append(Step("data", "1", data, marker=recipe.marker(paths.data, "data")))

    def format_and_filter() -> str:
        counts = {}
        for split in ("train", "dev"):
            org = paths.root / "dump" / "raw" / "org" / split
            format_data_dir(paths.data / split, org, text_files)
            counts[split] = filter_data_dir(org, paths.dump(split), text_files)
        counts["test"] = format_data_dir(paths.data / "test", paths.dump("test"), text_files)
        lines = [line for line in (paths.data / "lm_train.txt").read_text(encoding="utf-8").splitlines()
                 if len(line.split()) > 1]
        paths.lm_train_text.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return ", ".join(f"{split} {count}" for split, count in counts.items()) + f"; lm_train.txt {len(lines)} lines"

    steps.append(Step("format", "2-4", format_and_filter, after=("data",),
                      marker=recipe.marker(paths.root / "dump" / "raw", "format")))

    def token_list() -> str:
        paths.token_list.parent.mkdir(parents=True, exist_ok=True)
        recipe.espnet("tokenize_text", [
            "--token_type", "char", "--input", paths.lm_train_text, "--output", paths.token_list,
            "--non_linguistic_symbols", recipe.nlsyms_arg, "--field", "2-", "--cleaner", "none", "--g2p", "none",
            "--write_vocabulary", "true", "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1",
            "--add_symbol", "<sos/eos>:-1"], paths.token_list.parent / "tokenize_text.log")
        return f"{len(paths.token_list.read_text(encoding='utf-8').splitlines())} tokens"

    steps.append(Step("token_list", "5", token_list, after=("format",),
                      marker=recipe.marker(paths.token_list.parent, "token_list")))

    if settings.uses_lm:
        steps += lm_steps(recipe)
    steps += asr_steps(recipe, text_files)
    return steps


def append_vocabulary_size(shape_file: Path, vocabulary_size: int, suffix: str = "char") -> Path:
    """``<key> <length>`` -> ``<key> <length>,<vocabulary_size>`` in ``<shape_file>.<suffix>`` (asr.sh)."""
    target = shape_file.with_name(f"{shape_file.name}.{suffix}")
    lines = shape_file.read_text(encoding="utf-8").splitlines()
    target.write_text("".join(f"{line},{vocabulary_size}\n" for line in lines), encoding="utf-8")
    return target


def collect_shapes(recipe: DemoRecipe, tool: str, stats_dir: Path, data_args: Sequence) -> str:
    """asr.sh's statistics stage (10, or 6 for the LM): ``<tool> --collect_stats true`` with the
    token arguments and ``data_args`` (data, shape files, config) into one split
    ``stats_dir/logdir/stats.1``, ``aggregate_stats_dirs`` into ``stats_dir``, and the vocabulary
    size appended to both ``text_shape`` files (``text_shape.char``)."""
    logdir = stats_dir / "logdir"
    recipe.espnet(tool, ["--collect_stats", "true", *recipe.token_args(), *data_args,
                         "--output_dir", logdir / "stats.1"], logdir / "stats.1.log")
    recipe.espnet("aggregate_stats_dirs", ["--input_dir", logdir / "stats.1", "--output_dir", stats_dir],
                  logdir / "aggregate.log")
    vocabulary = len(recipe.paths.token_list.read_text(encoding="utf-8").splitlines())
    for split in ("train", "valid"):
        append_vocabulary_size(stats_dir / split / "text_shape", vocabulary)
    return f"shapes in {stats_dir}"


def lm_steps(recipe: DemoRecipe) -> List[Step]:
    """Stages 6-8 and the LM pruning (ASR only)."""
    settings, paths = recipe.settings, recipe.paths
    lm_config = paths.conf("train_lm.yaml")
    dev_text = paths.dump("dev") / "text"
    steps: List[Step] = []

    def lm_stats() -> str:
        return collect_shapes(recipe, "lm_train", paths.lm_stats, [
            "--train_data_path_and_name_and_type", f"{paths.lm_train_text},text,text",
            "--valid_data_path_and_name_and_type", f"{dev_text},text,text",
            "--train_shape_file", paths.lm_train_text, "--valid_shape_file", dev_text, "--config", lm_config])

    steps.append(Step("lm_stats", "6", lm_stats, after=("token_list",), marker=recipe.marker(paths.lm_stats, "stats"),
                      priority=SERIAL_PRIORITY))

    def lm_train() -> str:
        recipe.espnet("lm_train", [
            "--ngpu", 0, *recipe.token_args(),
            "--valid_data_path_and_name_and_type", f"{dev_text},text,text",
            "--valid_shape_file", paths.lm_stats / "valid" / "text_shape.char",
            "--fold_length", 150, "--resume", "true", "--output_dir", paths.lm_exp,
            "--train_data_path_and_name_and_type", f"{paths.lm_train_text},text,text",
            "--train_shape_file", paths.lm_stats / "train" / "text_shape.char",
            "--config", lm_config, *recipe.train_args(settings.lm_steps)], paths.lm_exp / "train.log")
        return f"{paths.lm_model}"

    steps.append(Step("lm_train", "7", lm_train, after=("lm_stats",), marker=recipe.marker(paths.lm_exp, "train"),
                      priority=SERIAL_PRIORITY))

    def lm_perplexity() -> str:
        output = paths.lm_exp / "perplexity_test"
        recipe.espnet("lm_calc_perplexity", [
            "--ngpu", 0, "--data_path_and_name_and_type", f"{paths.dump('test') / 'text'},text,text",
            "--train_config", paths.lm_exp / "config.yaml", "--model_file", paths.lm_model,
            "--output_dir", output], output / "lm_calc_perplexity.log")
        return f"test perplexity {float((output / 'ppl').read_text().strip()):.3f}"

    steps.append(Step("lm_perplexity", "8", lm_perplexity, after=("lm_train",),
                      marker=recipe.marker(paths.lm_exp / "perplexity_test", "ppl"), priority=SERIAL_PRIORITY))
    steps += lm_pruning_steps(recipe)
    return steps


def asr_steps(recipe: DemoRecipe, text_files: Sequence[str]) -> List[Step]:
    """Stages 10-13 for the stand-in and every system."""
    settings, paths, task = recipe.settings, recipe.paths, recipe.task
    steps: List[Step] = []
    train_dir, valid_dir = paths.dump("train"), paths.dump("dev")

    def data_args(option: str, data_dir: Path) -> List:
        return [option, f"{data_dir}/wav.scp,speech,sound", option, f"{data_dir}/text,text,text"]

    def stats() -> str:
        return collect_shapes(recipe, f"{task}_train", paths.asr_stats, [
            *data_args("--train_data_path_and_name_and_type", train_dir),
            *data_args("--valid_data_path_and_name_and_type", valid_dir),
            "--train_shape_file", train_dir / "wav.scp", "--valid_shape_file", valid_dir / "wav.scp",
            "--config", recipe.standin_config, "--frontend_conf", "fs=16k"])

    steps.append(Step(f"{task}_stats", "10", stats, after=("token_list",),
                      marker=recipe.marker(paths.asr_stats, "stats")))

    def train(config: Path, experiment: Path, extra: Sequence) -> Dict[str, float]:
        shapes = []
        for split in ("train", "valid"):
            shapes += [f"--{split}_shape_file", paths.asr_stats / split / "speech_shape",
                       f"--{split}_shape_file", paths.asr_stats / split / "text_shape.char"]
        return recipe.espnet(f"{task}_train", [
            *recipe.token_args(), *data_args("--valid_data_path_and_name_and_type", valid_dir),
            *data_args("--train_data_path_and_name_and_type", train_dir), *shapes,
            "--resume", "true", "--fold_length", 80000, "--fold_length", 150,
            "--output_dir", experiment, "--config", config, "--frontend_conf", "fs=16k", *extra],
            experiment / "train.log")

    standin = paths.exp(SSL_STANDIN)

    def pretrain() -> str:
        if settings.standin != "ctc":
            return copy_committed_standin(paths.ssl_checkpoint, settings.standin)
        train(recipe.standin_config, standin, recipe.train_args(settings.pretrain_steps, settings.batch_size))
        return recipe.extract_standin_encoder()

    steps.append(Step(SSL_STANDIN, "11", pretrain, after=(f"{task}_stats",), marker=recipe.marker(standin, "train")))
    steps += latency_table_steps(recipe)

    decode_steps: List[str] = []
    int8 = recipe.settings.int8_sizes()
    for system in settings.systems:
        experiment = paths.exp(system.name)

        def finetune(system: System = system, experiment: Path = experiment) -> str:
            timing = train(recipe.finetune_config, experiment, recipe.system_args(system))
            took = recipe.record_training_time(experiment, timing, settings.training_steps(system))
            return f"{describe_training(experiment)}; {took}"

        steps.append(Step(f"train_{system.name}", "11", finetune, after=training_after(system),
                          marker=recipe.marker(experiment, "train")))
        previous = f"train_{system.name}"
        if system.method not in UNPRUNED_METHODS:
            def export(experiment: Path = experiment, system: System = system) -> str:
                model_file = final_model_file(experiment)
                recipe.ours("bin.export", ["--train_config", experiment / "config.yaml", "--model_file", model_file,
                                           "--output_dir", paths.decode_exp(system.name)], experiment / "export.log")
                summaries = []
                for size in system.sizes:
                    _, compact = decode_files(paths, size)
                    report = ExportReport.read(compact.with_suffix(".json"))
                    summaries.append(("" if size.size is None else f"{size.size_dir}: ")
                                     + f"params x{report.ratio('params'):.3f}, MACs x{report.ratio('macs'):.3f}")
                return "compact encoder: " + "; ".join(summaries)

            steps.append(Step(f"export_{system.name}", "export", export, after=(previous,),
                              marker=recipe.marker(experiment, "export")))
            previous = f"export_{system.name}"
        for size in system.sizes:
            steps.append(decode_step(recipe, size, INFERENCE_TAG, None, (previous,)))
            decode_steps.append(steps[-1].name)
            if size in int8:
                steps.append(decode_step(recipe, size, INT8_TAG, None, (previous,), quantize=True))
                decode_steps.append(steps[-1].name)

    if settings.uses_lm:
        fusion = next(system for system in settings.systems if system.name == settings.fusion_system).sizes[0]
        trained = f"export_{fusion.name}" if fusion.method not in UNPRUNED_METHODS else f"train_{fusion.name}"
        for lm in fusion_lms(settings, paths):
            lm_step = "lm_train" if lm["pruning"] is None else f"lm_prune_{lm['pruning'].name}"
            steps.append(decode_step(recipe, fusion, lm["inference_tag"], lm, (trained, lm_step)))
            decode_steps.append(steps[-1].name)

    steps.append(Step("score", "13", recipe.score_all, after=tuple(decode_steps)))
    return steps


def decode_step(recipe: DemoRecipe, system: SystemSize, inference_tag: str, lm: Optional[Dict],
                after: Tuple[str, ...], quantize: bool = False) -> Step:
    """Stage 12 (one job, batch 1) for ``system`` (one size), optionally with shallow fusion of ``lm``, or
    (``quantize``) with ESPnet's dynamic int8 quantization of the model (``--quantize_asr_model
    true``: every ``torch.nn.Linear``, the compact frontend's included, to qint8)."""
    paths, task = recipe.paths, recipe.task
    decode_dir = paths.decode_dir(system.name, inference_tag)

    def decode() -> str:
        output = decode_dir / "logdir" / "output.1"
        test = paths.dump("test")
        train_config, model_file = decode_files(paths, system)
        args = ["--batch_size", 1, "--ngpu", 0, "--data_path_and_name_and_type", f"{test}/wav.scp,speech,sound",
                "--key_file", test / "wav.scp", f"--{task}_train_config", train_config,
                f"--{task}_model_file", model_file, "--output_dir", output,
                "--config", paths.conf(f"decode_{task}.yaml"), "--beam_size", recipe.settings.beam_size]
        if lm is not None:
            args += ["--lm_train_config", lm["config"], "--lm_file", lm["model_file"],
                     "--lm_weight", recipe.settings.lm_weight]
        if quantize:
            args += ["--quantize_asr_model", "true"]
        recipe.espnet(f"{task}_inference", args, decode_dir / "logdir" / f"{task}_inference.1.log")
        hypotheses = output / "1best_recog" / "text"
        lines = sorted(hypotheses.read_text(encoding="utf-8").splitlines()) if hypotheses.exists() else []
        (decode_dir / "text").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return f"{len(lines)} hypotheses in {decode_dir / 'text'}"

    name = f"decode_{system.name}" + ("" if lm is None else f"_lm_{lm['name']}") + ("_int8" if quantize else "")
    return Step(name, "12", decode, after=after, marker=recipe.marker(decode_dir, "decode"))


def describe_training(experiment: Path) -> str:
    """The last validation line of an ESPnet training log, shortened to its key numbers."""
    log = experiment / "train.log"
    last = ""
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "epoch results:" in line:
            last = line
    if not last:
        return f"log in {log}"
    keys = ("cer_ctc", "prune_expected_total", "prune_expected_cnn", "prune_expected_transformer")
    found = []
    for key in keys:
        marker = f"{key}="
        index = last.rfind(marker)
        if index >= 0:
            value = last[index + len(marker):].split(",")[0]
            found.append(f"{key} {value}")
    return ", ".join(found)
