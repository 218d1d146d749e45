"""The recipes' YAML configs: known keys only, the budgets of the repository's conf/pruning
(the paper's comparisons, one file each, linked by every recipe), reachable on wav2vec2-base;
the training config builds and trains a step in ESPnet with every budget, and the exported
model decodes with the recipe's decode config."""

import inspect
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
import yaml

from espnet_prune import register
from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.presets import conf_dir, presets
from espnet_prune.pruning.config import PruningConfig
from espnet_prune.pruning.controller import PruningController
from espnet_prune.ssl.config import get_config


def _resolve(pruning: Dict[str, Any]) -> Dict[str, Any]:
    """The pruning keys a frontend would use for ``pruning`` (preset applied, values checked)."""
    return PruningConfig.from_dict(pruning, where="frontend_conf.pruning").to_dict()

REPO = Path(__file__).resolve().parents[3]
EGS2 = REPO / "egs2"
RECIPES = {"asr": EGS2 / "librispeech_100" / "asr1", "slu": EGS2 / "slurp" / "slu1"}
CHECKPOINT = "downloads/wav2vec_small.pt"
MACS_SWEEP = ("0.9", "0.8", "0.7", "0.6", "0.5", "0.4")
TRANSFORMER_UNITS = {"head", "attn_layer", "interm", "ffn_layer"}
#: The budgets the paper compares, by preset name (conf/pruning/<name>.yaml).
BUDGETS = ("transformer_only_macs0.6", "separate_macs0.6", "hj_params0.6", *(f"hj_macs{t}" for t in MACS_SWEEP))
#: Every experiment of a recipe: the unpruned baseline and one per budget.
METHODS = ("base", *BUDGETS)
DEFAULT_BUDGET = "hj_macs0.6"


def config_path(task: str) -> Path:
    """The recipe's one training config."""
    return RECIPES[task] / "conf" / f"train_{task}_wav2vec2.yaml"


def load(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def experiment_config(task: str, method: str) -> Dict[str, Any]:
    """The training config as ESPnet resolves it for ``method``: what
    ``--frontend_conf pruning.preset=<budget>`` (or ``pruning=null`` for the baseline) gives."""
    config = load(config_path(task))
    if method == "base":
        config["frontend_conf"]["pruning"] = None
    else:
        config["frontend_conf"]["pruning"]["preset"] = method
    return config


TRAIN_CONFIGS: List[Tuple[str, str]] = [(task, method) for task in RECIPES for method in METHODS]
CONFIG_IDS = [f"{task}-{method}" for task, method in TRAIN_CONFIGS]


def test_conf_pruning_holds_exactly_the_budgets_the_paper_compares():
    assert conf_dir() == REPO / "conf"  # from a checkout, the top-level conf/ itself
    assert sorted(path.stem for path in (REPO / "conf" / "pruning").glob("*.yaml")) == sorted(BUDGETS)
    budgets = presets("pruning")
    for name, budget in budgets.items():
        units = set(budget["units"])
        if name.startswith("transformer_only"):
            assert units == TRANSFORMER_UNITS
            assert budget == {"units": budget["units"], "metric": "macs", "target": 0.6}
        elif name.startswith("separate"):
            assert units == TRANSFORMER_UNITS | {"conv"}
            assert budget == {"units": budget["units"], "metric": "macs", "cnn_target": 0.6, "transformer_target": 0.6}
        elif name.startswith("hj_params"):
            assert units == TRANSFORMER_UNITS | {"conv"}
            assert budget == {"units": budget["units"], "metric": "params", "target": 0.6}
        else:
            assert units == TRANSFORMER_UNITS | {"conv"}
            assert budget == {"units": budget["units"], "metric": "macs", "target": float(name[len("hj_macs"):])}


@pytest.mark.parametrize("task", RECIPES)
def test_recipes_link_the_shared_budgets_instead_of_copying_them(task):
    link = RECIPES[task] / "conf" / "pruning"
    assert link.is_symlink() and link.resolve() == (REPO / "conf" / "pruning").resolve()
    assert not (RECIPES[task] / "conf" / "tuning").exists()
    configs = sorted(path.name for path in (RECIPES[task] / "conf").glob("*.yaml"))
    assert configs == sorted([config_path(task).name, Path(DECODE_CONFIGS[task]).name, *WHOLE_MODEL_CONFIGS[task]])
    for path in (RECIPES[task] / "conf").glob("*.yaml"):
        config = load(path)
        assert isinstance(config, dict) and config, path


@pytest.mark.parametrize("task", RECIPES)
def test_frontend_and_pruning_keys_are_known(task):
    config = load(config_path(task))
    assert config["frontend"] == "pruned_ssl"
    assert config["model"] == "pruned_espnet"
    frontend_conf = config["frontend_conf"]
    frontend_keys = set(inspect.signature(PrunedSSLFrontend.__init__).parameters) - {"self"}
    assert set(frontend_conf) <= frontend_keys
    assert frontend_conf["checkpoint"] == CHECKPOINT
    # With a checkpoint, an arch dict without a preset overrides only the fields it names.
    assert "preset" not in frontend_conf["arch"]
    get_config("wav2vec2_base", **frontend_conf["arch"])
    pruning = frontend_conf["pruning"]
    assert pruning["preset"] == DEFAULT_BUDGET
    # The config sets the schedule; the budget (units, metric, targets) is the preset's alone.
    assert set(pruning) - {"preset"} <= set(PruningConfig.keys()) - set(presets("pruning")[DEFAULT_BUDGET])
    assert set(pruning) - {"preset"} == {"warmup_steps", "reference_seconds", "reg_lr"}


@pytest.mark.parametrize("task,method", [(t, m) for t, m in TRAIN_CONFIGS if m != "base"],
                         ids=[i for i in CONFIG_IDS if not i.endswith("-base")])
def test_pruning_budgets_are_reachable_on_wav2vec2_base(task, method):
    """The controller accepts each budget with the recipe's schedule for the real wav2vec2-base
    shape, and removing every gated unit would go below each budget's target."""
    conf = _resolve(experiment_config(task, method)["frontend_conf"]["pruning"])
    for key in ("reg_lr", "lambda2_lr_scale"):
        conf.pop(key)
    controller = PruningController(get_config("wav2vec2_base"), **conf)
    assert set(controller.budgets) == ({"cnn", "transformer"} if conf["cnn_target"] is not None else {"total"})
    with torch.no_grad():
        for parameter in controller.gate_parameters():
            parameter.fill_(-20.0)
        smallest = {name: float(ratio) for name, ratio in controller.expected_ratios().items()}
    for name, target in controller.budgets.items():
        assert smallest[name] < target, (name, smallest[name], target)


def test_a_budget_preset_is_resolved_and_explicit_keys_win():
    conf = _resolve({"preset": "separate_macs0.6", "transformer_target": 0.5})
    assert (conf["cnn_target"], conf["transformer_target"], conf["target"]) == (0.6, 0.5, None)
    conf = _resolve({"preset": "hj_macs0.5", "metric": "params", "warmup_steps": 7})
    assert (conf["metric"], conf["target"], conf["warmup_steps"]) == ("params", 0.5, 7)
    with pytest.raises(ValueError, match=r"Unknown pruning preset 'hj_macs0.55'; known presets: \['hj_macs0.4'"):
        _resolve({"preset": "hj_macs0.55"})
    with pytest.raises(ValueError, match="Unknown key"):
        _resolve({"preset": "hj_macs0.5", "budget": 1})


def small_arch(overrides: Dict[str, Any]) -> Dict[str, Any]:
    """A 1-layer random encoder as wide as wav2vec2-base, so the configs' heads fit unchanged."""
    arch = dict(model_type="wav2vec2",
                conv_layers=[[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]],
                embed_dim=get_config("wav2vec2_base").embed_dim, num_layers=1, num_heads=12, ffn_dims=64,
                pos_conv_kernel=16, pos_conv_groups=16)
    arch.update(overrides)
    return arch


@pytest.fixture(scope="module")
def espnet_tasks():
    """ESPnet's ASR and SLU tasks with the plugin registered; one intra-op thread meanwhile
    (the models are tiny, and threads only contend with each other on a busy machine)."""
    register()
    from espnet2.tasks.abs_task import scheduler_classes
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.slu import SLUTask

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"asr": ASRTask, "slu": SLUTask}, scheduler_classes
    torch.set_num_threads(threads)


TOKENS = ["<blank>", "<unk>", "alarm_set", "wake", "me", "up", "at", "seven", "play", "music", "jazz", "now",
          "<sos/eos>"]
DECODE_CONFIGS = {"asr": "conf/decode_asr_ctc.yaml", "slu": "conf/decode_slu.yaml"}
#: The whole-model configs beside them (model_conf.pruning, test_whole_model_recipes.py).
WHOLE_MODEL_CONFIGS = {"asr": ["train_asr_wav2vec2_conformer.yaml", "decode_asr_attention.yaml"],
                       "slu": ["train_slu_wav2vec2_whole.yaml"]}


def build(task_class, task: str, method: str, tmp_path: Path):
    """``(args, model)`` as ESPnet's trainer makes them from the recipe config and run.sh's
    ``--frontend_conf`` option for ``method``, with the pretrained checkpoint replaced by a
    small random encoder."""
    config = load(config_path(task))
    frontend_conf = config["frontend_conf"]
    frontend_conf["arch"] = small_arch(frontend_conf["arch"])
    del frontend_conf["checkpoint"]
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "tokens.txt").write_text("".join(token + "\n" for token in TOKENS))
    option = "pruning=null" if method == "base" else f"pruning.preset={method}"
    args = task_class.get_parser().parse_args(["--config", str(tmp_path / "train.yaml"), "--token_list",
                                               str(tmp_path / "tokens.txt"), "--output_dir", str(tmp_path),
                                               "--frontend_conf", option])
    torch.manual_seed(0)
    return args, task_class.build_model(args)


@pytest.mark.parametrize("task,method", TRAIN_CONFIGS, ids=CONFIG_IDS)
def test_config_trains_a_step_in_espnet(task, method, espnet_tasks, tmp_path):
    """ESPnet's parser accepts every key, the model builds, and one optimizer and scheduler
    step runs with the pruning loss."""
    tasks, scheduler_classes = espnet_tasks
    args, model = build(tasks[task], task, method, tmp_path)
    (optimizer,) = tasks[task].build_optimizers(args, model)
    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)

    speech, speech_lengths = torch.randn(2, 4000), torch.tensor([4000, 3200])
    text, text_lengths = torch.tensor([[2, 3, 5], [8, 10, -1]]), torch.tensor([3, 2])
    loss, stats, _ = model(speech, speech_lengths, text, text_lengths)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    optimizer.step()
    scheduler.step()
    controller = model.frontend.controller
    if method == "base":
        assert controller is None and "loss_prune" not in stats
    else:
        budget = presets("pruning")[method]
        expected = ({"cnn": budget["cnn_target"], "transformer": budget["transformer_target"]}
                    if "cnn_target" in budget else {"total": budget["target"]})
        assert controller.budgets == pytest.approx(expected)
        assert "loss_prune" in stats and int(controller.step) == 1
        pruning_ids = [id(p) for group in optimizer.param_groups[1:] for p in group["params"]]
        assert sorted(pruning_ids) == sorted(id(p) for p in controller.gate_parameters())


@pytest.mark.parametrize("task", RECIPES)
def test_exported_model_decodes_with_the_recipe_decode_config(task, espnet_tasks, tmp_path):
    """What prune_stages.sh does after stage 11: export the averaged checkpoint of the default
    config (task detected from config.yaml), then decode the gated and the compact model with
    the recipe's decode config."""
    from espnet_prune.export.experiment import export_file

    tasks, _ = espnet_tasks
    args, model = build(tasks[task], task, DEFAULT_BUDGET, tmp_path)
    with torch.no_grad():  # as if training had closed half of the first layer's FFN units
        model.frontend.controller.gates["interm"]["0"].log_alpha[:32] = -20.0
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), exp / "valid.acc.ave.pth")
    report = export_file(exp / "config.yaml", exp / "valid.acc.ave.pth", exp / "valid.acc.ave.pruned.pth").to_json()
    assert report["task"] == task
    assert report["encoder"]["ratio"]["params"]["transformer"] < 1.0

    if task == "asr":
        from espnet2.bin.asr_inference import Speech2Text as Inference
    else:
        from espnet2.bin.slu_inference import Speech2Understand as Inference
    decode_conf = load(RECIPES[task] / DECODE_CONFIGS[task])
    # ctc_greedy is espnet_prune.bin.asr_inference's option (what the launcher runs for asr.sh):
    # Speech2Text's model, decoded by the CTC best path.
    greedy = decode_conf.pop("ctc_greedy", False)
    waveform = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    for model_file in ("valid.acc.ave.pth", "valid.acc.ave.pruned.pth"):
        inference = Inference(**{f"{task}_train_config": str(exp / "config.yaml"),
                                 f"{task}_model_file": str(exp / model_file)}, **decode_conf)
        first_ffn = inference.asr_model.frontend.encoder.config.ffn_dims[0]
        assert (first_ffn < 64) == model_file.endswith("pruned.pth")
        if greedy:
            from espnet_prune.inference.ctc_greedy import CTCBestPath

            inference = CTCBestPath(inference)
        text, tokens, *_ = inference(waveform)[0]
        assert set(tokens) <= set(TOKENS)


@pytest.mark.parametrize("task", RECIPES)
def test_decode_configs_hold_inference_options(task):
    if task == "asr":  # under the launcher, asr.sh's espnet2.bin.asr_inference is this superset of it
        from espnet_prune.bin.asr_inference import get_parser
    else:
        from espnet2.bin.slu_inference import get_parser
    options = {action.dest for action in get_parser()._actions}
    config = load(RECIPES[task] / DECODE_CONFIGS[task])
    assert set(config) <= options
    assert config["lm_weight"] == 0.0


@pytest.mark.parametrize("task", RECIPES)
def test_run_sh_and_readme_name_existing_configs(task):
    recipe = RECIPES[task]
    run_sh = (recipe / "run.sh").read_text()
    readme = (recipe / "README.md").read_text()
    named = set(re.findall(r"conf/[\w./-]+\.yaml", run_sh + readme))
    assert {str(config_path(task).relative_to(recipe)), DECODE_CONFIGS[task]} <= named
    missing = sorted(path for path in named if not (recipe / path).is_file())
    assert not missing
    for budget in BUDGETS:
        assert f"pruning.preset={budget}" in readme
    assert "pruning=null" in readme
    assert CHECKPOINT in readme
