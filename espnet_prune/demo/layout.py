"""Where the demo's files are: the recipe's working directory as asr.sh / slu.sh lay it out.

:class:`DemoPaths` names every directory and file of the working directory (``data/``,
``dump/raw/``, ``exp/...``, ``results.json``); the functions below name the decodings: the
experiment and model file each :class:`~espnet_prune.demo.settings.SystemSize` is decoded from,
the shallow-fusion LMs and their inference tags, and where a fine-tuning run's time is recorded.
"""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from espnet_prune.demo.settings import UNPRUNED_METHODS, DemoError, DemoSettings, LMPruning, SystemSize, method_of
from espnet_prune.lm.choices import target_name

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / "egs2" / "espeak_demo"
TEMPLATE_PRUNE = REPO_ROOT / "egs2" / "TEMPLATE_prune"
PRETRAINED_STANDIN = REPO_ROOT / "egs2" / "espeak_demo" / "ssl_standin"
#: The committed stand-ins (``standin`` of DemoSettings -> directory): ``make pretrain`` writes the
#: self-supervised one, ``make standin`` the CTC one of the default corpus.
COMMITTED_STANDINS = {"pretrained": PRETRAINED_STANDIN, "ctc_committed": PRETRAINED_STANDIN / "ctc"}
SSL_STANDIN = "ssl_standin"  # tag of the stand-in's experiment: exp/asr_ssl_standin
LM_TAG = "train_lm_char"  # asr.sh's lm_tag for conf/train_lm.yaml and char tokens
INFERENCE_TAG = "decode"  # decodings without LM: exp/<task>_<system>/decode/test
#: The compact pruned systems decoded again with ESPnet's dynamic int8 quantization
#: (``--quantize_asr_model true``): exp/<task>_<system>_pruned/decode_int8/test
INT8_TAG = "decode_int8"
#: A pruned system's compact model is exported (as prune_stages.sh does) to exp/<task>_<system>_pruned
PRUNED_SUFFIX = "_pruned"


class DemoPaths:
    """The recipe directory's layout, as asr.sh / slu.sh make it.

    Args:
        root: the recipe's working directory (all paths below are under it, absolute).
        task: ``asr`` or ``slu``.
    """

    def __init__(self, root: Path, task: str):
        self.root = Path(root).resolve()
        self.task = task

    @property
    def recipe(self) -> Path:
        """The recipe in the source tree: ``egs2/espeak_demo/<task>1``."""
        return RECIPES / f"{self.task}1"

    def conf(self, name: str) -> Path:
        path = self.recipe / "conf" / name
        if not path.is_file():
            raise DemoError(f"{path} is missing: the demo runs from a source checkout of espnet_prune")
        return path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dump(self, split: str) -> Path:
        return self.root / "dump" / "raw" / split

    @property
    def lm_train_text(self) -> Path:
        return self.root / "dump" / "raw" / "lm_train.txt"

    @property
    def nlsyms(self) -> Optional[Path]:
        return self.data / "nlsyms.txt" if self.task == "slu" else None

    @property
    def token_list(self) -> Path:
        return self.data / "token_list" / "char" / "tokens.txt"

    @property
    def lm_stats(self) -> Path:
        return self.root / "exp" / "lm_stats_char"

    @property
    def lm_exp(self) -> Path:
        return self.root / "exp" / f"lm_{LM_TAG}"

    @property
    def lm_model(self) -> Path:
        return self.lm_exp / "valid.loss.ave.pth"

    def lm_pruned(self, pruning: LMPruning) -> Path:
        return self.root / "exp" / "lm_pruned" / pruning.name

    @property
    def asr_stats(self) -> Path:
        return self.root / "exp" / f"{self.task}_stats_raw_char"

    def exp(self, tag: str) -> Path:
        return self.root / "exp" / f"{self.task}_{tag}"

    @property
    def ssl_checkpoint(self) -> Path:
        """The stand-in's encoder: a state dict with torchaudio's names (``arch`` in the config)."""
        return self.exp(SSL_STANDIN) / "ssl_encoder.pth"

    def decode_exp(self, system: str) -> Path:
        """The experiment that stage 12 decodes for ``system`` (a :attr:`SystemSize.name`): the
        trained one for an unpruned system, else the compact model's standalone directory that
        ``espnet_prune.bin.export --output_dir`` writes (as ``prune_stages.sh`` does); for a size
        of a multi-size system (``<system>/target0.80``) that size's directory in it."""
        name, _, size_dir = system.partition("/")
        experiment = self.exp(name) if method_of(name) in UNPRUNED_METHODS else self.exp(f"{name}{PRUNED_SUFFIX}")
        return experiment / size_dir if size_dir else experiment

    def decode_dir(self, system: str, inference_tag: str = INFERENCE_TAG) -> Path:
        return self.decode_exp(system) / inference_tag / "test"

    @property
    def latency_table(self) -> Path:
        """The stand-in encoder's latency table, profiled in the run (the latency budgets')."""
        return self.root / "exp" / "latency" / f"{self.task}_{SSL_STANDIN}.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"


def lm_fusion_tag(pruning: Optional[LMPruning], target: Optional[float]) -> str:
    """Inference tag of a decoding with the dense LM (``pruning=None``) or a pruned one."""
    if pruning is None:
        return f"{INFERENCE_TAG}_lm_dense"
    return f"{INFERENCE_TAG}_lm_{pruning.name}_{target_name(target)}"


def fusion_lms(settings: DemoSettings, paths: DemoPaths) -> List[Dict]:
    """The LMs decoded with by shallow fusion: the dense LM, then every pruned one.

    Returns:
        dicts with ``name``, ``pruning`` (an :class:`LMPruning` or None), ``target``,
        ``config``, ``model_file`` and ``inference_tag``.
    """
    lms = [dict(name="dense", pruning=None, target=None, config=paths.lm_exp / "config.yaml",
                model_file=paths.lm_model, inference_tag=lm_fusion_tag(None, None))]
    for pruning in settings.lm_prunings:
        for target in settings.lm_targets:
            directory = paths.lm_pruned(pruning) / target_name(target)
            lms.append(dict(name=f"{pruning.name}_{target_name(target)}", pruning=pruning, target=target,
                            config=directory / "config.yaml", model_file=directory / "model.pth",
                            inference_tag=lm_fusion_tag(pruning, target)))
    return lms


def final_model_file(experiment: Path) -> Path:
    """The model of the last training epoch (ESPnet's ``latest.pth``, a link to ``<N>epoch.pth``).

    Systems are decoded at the end of training, where the pruning has settled at its target
    (the best validation epoch may come from the ramp, before the target is reached).
    """
    latest = experiment / "latest.pth"
    if not latest.exists():
        raise DemoError(f"{latest} does not exist: training of {experiment.name} did not finish")
    return latest


def decode_files(paths: DemoPaths, size: SystemSize) -> Tuple[Path, Path]:
    """What stage 12 decodes for ``size``: ``(config.yaml, model file)`` of
    :meth:`DemoPaths.decode_exp`, the final model (the compact one for a pruned system)."""
    experiment = paths.decode_exp(size.name)
    return experiment / "config.yaml", experiment / final_model_file(paths.exp(size.system.name)).name


def training_time_file(experiment: Path) -> Path:
    """Where a fine-tuning step records its wall and CPU seconds (``{"wall_seconds", "cpu_seconds"}``)."""
    return experiment / "train_time.json"
