"""The demo's recipe object: how its steps run processes, and the pieces both modes share.

:class:`DemoRecipe` holds the settings and layout of one run and runs its processes (ESPnet's
binaries through the plugin launcher, the demo's own tools, shell scripts), each timed by wall
and CPU seconds, with its output in a log; it gives the options every stage shares (tokens,
training length, each system's budget), scores the decodings (stage 13, in Python:
:mod:`~espnet_prune.demo.scoring`) and names the steps' markers. Both modes
(:mod:`~espnet_prune.demo.direct_mode`, :mod:`~espnet_prune.demo.recipe_mode`) build their steps
from it, and share :func:`copy_committed_standin` and :func:`lm_pruning_steps`.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from espnet_prune.demo import scoring
from espnet_prune.demo.layout import (
    COMMITTED_STANDINS,
    INFERENCE_TAG,
    INT8_TAG,
    SSL_STANDIN,
    DemoPaths,
    fusion_lms,
    training_time_file,
)
from espnet_prune.demo.settings import (
    LATENCY_METHODS,
    WHOLE_MODEL_ENCODER,
    WHOLE_MODEL_METHODS,
    WHOLE_MODEL_TOKENS_PER_SECOND,
    DemoError,
    DemoSettings,
    LMPruning,
    System,
)
from espnet_prune.demo.steps import SERIAL_PRIORITY, Progress, Step, format_seconds
from espnet_prune.utils.output_dir import OutputDirError, claim_output_dir, replace_file

#: The record of a committed CTC stand-in (steps, validation CER, corpus), beside its encoder.
STANDIN_RECORD = "standin.json"


class DemoRecipe:
    """One demo run in ``paths.root``: its processes, options and scoring, for the steps of either mode.

    Args:
        settings: what to run.
        paths: the working directory's layout.
        lanes: steps run at the same time.
        threads: CPU threads of each ESPnet process (``OMP_NUM_THREADS``).
        espnet_root: an ESPnet checkout: run its asr.sh / slu.sh (recipe mode) instead of the
            binaries directly.
        progress: where progress lines go.
    """

    def __init__(self, settings: DemoSettings, paths: DemoPaths, lanes: int = 2, threads: int = 1,
                 espnet_root: Optional[Path] = None, progress: Optional[Progress] = None):
        self.settings = settings
        self.paths = paths
        self.lanes = lanes
        self.threads = threads
        self.espnet_root = None if espnet_root is None else Path(espnet_root).resolve()
        self.progress = progress or Progress()
        self.task = settings.task
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                        PYTHONIOENCODING="UTF-8")

    # ------------------------------------------------------------------ processes
    def run(self, command: Sequence, log: Path, cwd: Optional[Path] = None) -> Dict[str, float]:
        """Run ``command`` with its output in ``log``; a failure raises with the log's tail.

        Returns:
            ``{"wall_seconds", "cpu_seconds"}`` of the command: its wall time and the user + system
            CPU time of the process and every descendant it waited for (``os.wait4``), so that steps
            running side by side are each timed on their own.
        """
        command = [str(part) for part in command]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as out:
            out.write(f"# {shlex.join(command)}\n")
            out.flush()
            started = time.monotonic()
            process = subprocess.Popen(command, cwd=cwd or self.paths.root, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - started
        if process.returncode != 0:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
            raise DemoError(f"exit status {process.returncode} of\n  {shlex.join(command)}\n"
                            f"last lines of {log}:\n{tail}")
        return {"wall_seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}

    def espnet(self, tool: str, args: Sequence, log: Path) -> Dict[str, float]:
        """``python -m espnet_prune -m espnet2.bin.<tool> ARGS`` (what asr.sh runs with the plugin)."""
        return self.run([sys.executable, "-m", "espnet_prune", "-m", f"espnet2.bin.{tool}", *args], log)

    def ours(self, module: str, args: Sequence, log: Path) -> Dict[str, float]:
        """``python -m espnet_prune.<module> ARGS``."""
        return self.run([sys.executable, "-m", f"espnet_prune.{module}", *args], log)

    def record_training_time(self, experiment: Path, timing: Dict[str, float], steps: int) -> str:
        """Write a fine-tuning run's wall and CPU seconds (:meth:`run`) to :func:`training_time_file`,
        with the optimizer steps it trained for ``steps`` (whole epochs, :meth:`train_args`)."""
        per_epoch = min(self.settings.steps_per_epoch, steps)
        steps = -(-steps // per_epoch) * per_epoch
        record = dict(timing, steps=steps, threads=self.threads)
        experiment.mkdir(parents=True, exist_ok=True)
        training_time_file(experiment).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return (f"{steps} steps in {format_seconds(timing['wall_seconds'])} wall, "
                f"{format_seconds(timing['cpu_seconds'])} CPU")

    # ------------------------------------------------------------------ shared pieces
    @property
    def nlsyms_arg(self) -> str:
        return str(self.paths.nlsyms) if self.paths.nlsyms else "none"

    def token_args(self) -> List[str]:
        return ["--use_preprocessor", "true", "--bpemodel", "none", "--token_type", "char",
                "--token_list", self.paths.token_list, "--non_linguistic_symbols", self.nlsyms_arg,
                "--cleaner", "none", "--g2p", "none"]

    def train_args(self, steps: int, batch_size: Optional[int] = None, seed: int = 0) -> List:
        """Length of an ESPnet training run: about ``steps`` optimizer steps, in epochs of
        ``steps_per_epoch`` (one validation each), and the one-cycle schedule over all of them;
        its ``--seed`` is the demo's seed plus ``seed``."""
        per_epoch = min(self.settings.steps_per_epoch, steps)
        epochs = -(-steps // per_epoch)
        args = ["--max_epoch", epochs, "--num_iters_per_epoch", per_epoch,
                "--scheduler_conf", f"total_steps={epochs * per_epoch}", "--seed", self.settings.seed + seed]
        return args if batch_size is None else args + ["--batch_size", batch_size]

    def system_args(self, system: System) -> List[str]:
        """Options of one system's fine-tuning run on top of ``conf/train_<task>_pruned_ssl.yaml``."""
        settings = self.settings
        args = self.train_args(settings.training_steps(system), settings.batch_size, system.seed)
        args += ["--frontend_conf", f"checkpoint={self.paths.ssl_checkpoint}",
                 "--frontend_conf", f"pruning.reference_seconds={settings.reference_seconds}"]
        if system.multi_size:
            overrides = system.frontend_overrides(settings.multisize_warmup_steps, settings.multisize_hold_steps)
        else:
            overrides = system.frontend_overrides(settings.prune_warmup_steps,
                                                  latency_table=str(self.paths.latency_table))
        for override in overrides:
            args += ["--frontend_conf", override]
        if system.method in WHOLE_MODEL_METHODS:
            pruning = dict(self.finetune_pruning, reference_seconds=settings.reference_seconds)
            args += ["--encoder", WHOLE_MODEL_ENCODER]
            for override in system.model_overrides(pruning, settings.prune_warmup_steps, settings.beam_size,
                                                   WHOLE_MODEL_TOKENS_PER_SECOND):
                args += ["--model_conf", override]
        return args

    @property
    def finetune_pruning(self) -> Dict:
        """``frontend_conf.pruning`` of the fine-tuning config (the budget preset and schedule)."""
        config = yaml.safe_load(self.finetune_config.read_text(encoding="utf-8"))
        return dict(config["frontend_conf"]["pruning"])

    @property
    def finetune_config(self) -> Path:
        return self.paths.conf(f"train_{self.task}_pruned_ssl.yaml")

    @property
    def standin_config(self) -> Path:
        return self.paths.conf(f"train_{self.task}_ssl_standin.yaml")

    def extract_standin_encoder(self) -> str:
        """Save the stand-in's SSL encoder (``frontend.encoder.*`` of its best model) for fine-tuning
        (what run.sh does with ``python -m espnet_prune.bin.extract_ssl``)."""
        from espnet_prune.ssl.extract import extract_ssl

        try:
            count = extract_ssl(self.paths.exp(SSL_STANDIN), self.paths.ssl_checkpoint)
        except (OSError, ValueError) as error:
            raise DemoError(f"the stand-in's encoder cannot be extracted: {error}") from None
        return f"{count} tensors -> {self.paths.ssl_checkpoint}"

    def score(self, system: str, inference_tag: str) -> Dict:
        """Stage 13 for one decoding: writes ``score.json`` beside its ``text``."""
        decode_dir = self.paths.decode_dir(system, inference_tag)
        symbols = scoring.read_symbols(self.paths.nlsyms)
        result = scoring.score_decoding(self.paths.dump("test") / "text", decode_dir / "text", self.task, symbols)
        (decode_dir / "score.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return result

    def score_all(self) -> str:
        """Stage 13 for every decoding of :meth:`decodings`; returns the main number of each."""
        lines = []
        for system, tag in self.decodings():
            result = self.score(system, tag)
            main = (f"intent acc {100 * result['intent_acc']:.1f}%" if self.task == "slu"
                    else f"WER {100 * result['wer']:.1f}%")
            lines.append(f"{system}/{tag} {main}")
        return "; ".join(lines)

    def decodings(self) -> List[Tuple[str, str]]:
        """Every ``(system size name, inference_tag)`` that stage 12 decodes."""
        decodings = [(size.name, INFERENCE_TAG) for size in self.settings.sizes()]
        decodings += [(size.name, INT8_TAG) for size in self.settings.int8_sizes()]
        if self.settings.uses_lm:
            decodings += [(self.settings.fusion_system, lm["inference_tag"])
                          for lm in fusion_lms(self.settings, self.paths)]
        return decodings

    def marker(self, directory: Path, name: str) -> Path:
        """The file whose existence marks step ``name`` in ``directory`` as done."""
        return directory / f".done_{name}"

    def mode_description(self) -> str:
        """How the stages run, for ``results.json``."""
        script = f"{self.task}.sh"
        if self.espnet_root is not None:
            return f"ESPnet's {script} from {self.espnet_root} (recipe mode)"
        return f"ESPnet binaries driven in {script}'s stage order (no egs2 TEMPLATE)"


def copy_committed_standin(checkpoint: Path, standin: str, source: Optional[Path] = None) -> str:
    """Put a committed stand-in (``standin``: a key of :data:`COMMITTED_STANDINS`, from ``source``,
    by default its committed directory) where the one trained in the run would be."""
    source = COMMITTED_STANDINS[standin] if source is None else source
    record_file = source / ("pretrain.json" if standin == "pretrained" else STANDIN_RECORD)
    files = [source / "ssl_encoder.pth", source / "ssl_encoder.json", record_file]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        make = "make pretrain" if standin == "pretrained" else "make standin"
        raise DemoError(f"the committed stand-in '{standin}' is missing ({', '.join(missing)}): run '{make}'")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, checkpoint.parent / path.name)
    record = json.loads(record_file.read_text(encoding="utf-8"))
    if standin == "pretrained":
        return (f"self-supervised stand-in ({record['settings']['steps']} steps on {record['hours']:.2f} h of "
                f"unlabelled audio, final masked-prediction loss {record['curve'][-1]['loss']:.3f}) -> {checkpoint}")
    return (f"committed CTC stand-in ({record['steps']} steps on the default corpus, valid CER "
            f"{record['valid_cer']:.3f}) -> {checkpoint}")


def save_standin(settings: DemoSettings, paths: DemoPaths, destination: Path) -> Path:
    """Commit the CTC stand-in a run trained (``make standin``): its encoder, architecture and
    ``standin.json`` (steps, the validation CER of every epoch, the corpus) into ``destination``."""
    experiment = paths.exp(SSL_STANDIN)
    log = experiment / "train.log"
    if settings.standin != "ctc" or not log.is_file():
        raise DemoError(f"--save_standin needs a stand-in trained in the run (--standin ctc); {log} is missing")
    curve = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "epoch results:" in line and "[valid]" in line:
            valid = line[line.index("[valid]"):]
            curve.append(float(valid.split("cer_ctc=")[1].split(",")[0]))
    corpus = json.loads((paths.data / "corpus.json").read_text(encoding="utf-8"))
    record = dict(objective="ctc", task=settings.task, steps=settings.pretrain_steps, batch_size=settings.batch_size,
                  seed=settings.seed, valid_cer=curve[-1], valid_cer_per_epoch=curve,
                  corpus={key: corpus[key] for key in ("task", "seed", "num_train", "num_dev", "num_test")
                          if key in corpus})
    try:
        claim_output_dir(destination, "espnet_prune.bin.demo --save_standin", marker=STANDIN_RECORD)
        for name in ("ssl_encoder.pth", "ssl_encoder.json"):
            with open(paths.ssl_checkpoint.parent / name, "rb") as source, replace_file(destination / name) as f:
                shutil.copyfileobj(source, f)
        with replace_file(destination / STANDIN_RECORD, "w") as f:
            f.write(json.dumps(record, indent=2) + "\n")
    except OutputDirError as error:
        raise DemoError(str(error)) from None
    return destination


#: The step that profiles the stand-in encoder's latency table (a latency budget's training runs after it).
LATENCY_TABLE_STEP = "latency_table"


def latency_table_steps(recipe: DemoRecipe) -> List[Step]:
    """``espnet_prune.bin.profile_latency`` of the stand-in's architecture on this machine, for the
    latency budgets (none without a system of :data:`~espnet_prune.demo.settings.LATENCY_METHODS`):
    the CPU and thread count the report times the decodes with, ``reference_seconds`` of audio,
    batch 1, ``latency_rounds`` rounds."""
    settings, paths = recipe.settings, recipe.paths
    if not any(system.method in LATENCY_METHODS for system in settings.systems):
        return []
    table = paths.latency_table

    def profile() -> str:
        recipe.ours("bin.profile_latency", [
            "--arch", paths.ssl_checkpoint.with_suffix(".json"), "--device", "cpu", "--threads", recipe.threads,
            "--batch", 1, "--seconds", settings.reference_seconds, "--rounds", settings.latency_rounds,
            "--output", table], table.with_suffix(".log"))
        check = json.loads(table.read_text(encoding="utf-8"))["check"]
        return (f"{table}: dense encoder {check['dense_measured_ms']:.1f} ms measured, "
                f"{check['dense_summed_ms']:.1f} ms summed over its pieces")

    return [Step(LATENCY_TABLE_STEP, "latency", profile, after=(SSL_STANDIN,),
                 marker=recipe.marker(table.parent, "profile"))]


def training_after(system: System) -> Tuple[str, ...]:
    """The steps a system's fine-tuning waits for: the stand-in, and the latency table of a latency budget."""
    return (SSL_STANDIN,) + ((LATENCY_TABLE_STEP,) if system.method in LATENCY_METHODS else ())


def lm_pruning_steps(recipe: DemoRecipe) -> List[Step]:
    """``espnet_prune.bin.lm_prune`` for every LM pruning configuration (after stage 8)."""
    settings, paths = recipe.settings, recipe.paths
    steps = []
    for pruning in settings.lm_prunings:
        output = paths.lm_pruned(pruning)

        def prune(pruning: LMPruning = pruning, output: Path = output) -> str:
            recipe.ours("bin.lm_prune", [
                "--lm_train_config", paths.lm_exp / "config.yaml", "--lm_file", paths.lm_model,
                "--train_text", paths.lm_train_text, "--valid_text", paths.dump("dev") / "text",
                "--criterion", pruning.criterion, "--method", pruning.method, "--scheduler", pruning.scheduler,
                "--targets", ",".join(str(t) for t in settings.lm_targets),
                "--finetune_steps", settings.lm_finetune_steps, "--seed", settings.seed,
                "--latency_threads", 1, "--output_dir", output], output.with_name(f"{output.name}.log"))
            report = json.loads((output / "report.json").read_text(encoding="utf-8"))
            return ", ".join(f"{row['name']} ppl {row['perplexity']:.2f}" for row in report["systems"])

        steps.append(Step(f"lm_prune_{pruning.name}", "8+", prune, after=("lm_train",),
                          marker=recipe.marker(output, "prune"), priority=SERIAL_PRIORITY))
    return steps


