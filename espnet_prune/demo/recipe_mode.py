"""Recipe mode of the demo: ESPnet's own asr.sh / slu.sh run the stages (``ESPNET_ROOT`` set).

The working directory ``<output_dir>/<task>1`` becomes an ESPnet recipe: ``run.sh``,
``conf/`` and ``local/`` link to ``egs2/espeak_demo/<task>1``, ``path.sh`` and ``cmd.sh`` to
``egs2/TEMPLATE_prune``, and ``egs2/TEMPLATE_prune/setup.sh`` links asr.sh / slu.sh, utils,
steps, scripts and pyscripts from the checkout. Every ESPnet stage then runs through the
recipe's own ``./run.sh`` (``egs2/espeak_demo/run_recipe.sh``: asr.sh / slu.sh through
``egs2/TEMPLATE_prune/prune_stages.sh``, with the compact model exported between stages 11
and 12), with the demo's sizes as options:

- stages 1-5 (``local/data.sh`` synthesises the corpus) and, for ASR, stages 6-8 (LM);
- stage 10: run.sh trains the SSL stand-in (stages 10-11 of ``train_<task>_ssl_standin.yaml``)
  and extracts its encoder (unless the committed self-supervised one is copied in its place,
  ``--standin pretrained``), then collects the shapes for the fine-tuning config;
- stages 11 and 12 for every system (two calls, so that the fine-tuning is timed on its own; for
  a multi-size system prune_stages.sh exports every size and decodes each);
- stage 12 with ``--use_lm true`` for the shallow-fusion decodings.

Stage 13 is the demo's Python scoring (the same numbers as sclite, with no SCTK install
needed), the LM pruning and the report are the demo's own steps, as in direct mode
(:mod:`~espnet_prune.demo.pipeline` adds the report).
"""

import sys
from pathlib import Path
from typing import Dict, List, Sequence

from espnet_prune.demo.layout import INFERENCE_TAG, INT8_TAG, LM_TAG, SSL_STANDIN, TEMPLATE_PRUNE, fusion_lms
from espnet_prune.demo.recipe import (
    DemoRecipe,
    copy_committed_standin,
    latency_table_steps,
    lm_pruning_steps,
    training_after,
)
from espnet_prune.demo.settings import DemoError, System, SystemSize
from espnet_prune.demo.steps import SERIAL_PRIORITY, Step

#: Links of the working directory: name -> path relative to the repository's egs2/.
RECIPE_LINKS = ("run.sh", "conf", "local")
TEMPLATE_LINKS = ("path.sh", "cmd.sh")


def setup_recipe_dir(recipe: DemoRecipe) -> str:
    """Make ``paths.root`` an ESPnet recipe directory linked to ``recipe.espnet_root``."""
    root = recipe.paths.root
    root.mkdir(parents=True, exist_ok=True)
    for name in RECIPE_LINKS:
        _link(root / name, recipe.paths.recipe / name)
    for name in TEMPLATE_LINKS:
        _link(root / name, TEMPLATE_PRUNE / name)
    setup = TEMPLATE_PRUNE / "setup.sh"
    if not setup.is_file():
        raise DemoError(f"{setup} is missing: recipe mode needs egs2/TEMPLATE_prune of a source checkout")
    recipe.run(["bash", setup, recipe.espnet_root], root / "setup.log", cwd=root)
    return f"{root} linked to {recipe.espnet_root}"


def _link(link: Path, target: Path) -> None:
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise DemoError(f"{link} exists and is not a link; use a new --output_dir")
    link.symlink_to(target)


def common_options(recipe: DemoRecipe) -> List[str]:
    """asr.sh / slu.sh options shared by every call."""
    settings, paths, task = recipe.settings, recipe.paths, recipe.task
    corpus_options = [
        "--num_train", settings.num_train, "--num_dev", settings.num_dev, "--num_test", settings.num_test,
        "--num_lm_sentences", settings.num_lm_sentences, "--num_dev_voices", settings.num_dev_voices,
        "--num_test_voices", settings.num_test_voices, "--seed", settings.seed]
    options = [
        "--python", f"{sys.executable} -m espnet_prune", "--ngpu", 0, "--nj", recipe.lanes,
        "--inference_nj", 1, "--gpu_inference", "false", "--feats_type", "raw", "--audio_format", "wav",
        "--fs", "16k", "--feats_normalize", "none", "--token_type", "char", "--cleaner", "none",
        "--train_set", "train", "--valid_set", "dev", "--test_sets", "test",
        "--local_data_opts", " ".join(str(option) for option in corpus_options),
        "--inference_config", f"conf/decode_{task}.yaml",
        f"--{task}_stats_dir", paths.asr_stats.relative_to(paths.root),
    ]
    # The token list (stage 5) comes from the template text, which has every intent and character.
    options += ["--lm_train_text", "data/lm_train.txt"]
    if task == "slu":
        options += ["--nlsyms_txt", "data/nlsyms.txt", "--use_lm", "false"]
    else:
        # asr.sh appends --lm_args to the LM's directory name unless --lm_tag names it.
        options += ["--lm_config", "conf/train_lm.yaml", "--lm_tag", LM_TAG,
                    "--lm_args", _join(recipe.train_args(settings.lm_steps))]
    return [str(option) for option in options]


def _join(args: Sequence) -> str:
    return " ".join(str(arg) for arg in args)


def prune_stages(recipe: DemoRecipe, first: int, last: int, options: Sequence, log: Path) -> Dict[str, float]:
    """The recipe's ``./run.sh --stage first --stop_stage last ...`` (egs2/espeak_demo/<task>1);
    returns its wall and CPU seconds (:meth:`DemoRecipe.run`)."""
    command = ["bash", "./run.sh", "--stage", first, "--stop_stage", last, *common_options(recipe), *options]
    return recipe.run(command, log, cwd=recipe.paths.root)


def recipe_steps(recipe: DemoRecipe) -> List[Step]:
    """The steps of recipe mode (module docstring)."""
    settings, paths, task = recipe.settings, recipe.paths, recipe.task
    logs = paths.root / "logs"
    standin_options = [f"--{task}_config", f"conf/train_{task}_ssl_standin.yaml", f"--{task}_tag", SSL_STANDIN]
    steps = [Step("setup", "0", lambda: setup_recipe_dir(recipe), marker=recipe.marker(paths.root, "setup"))]

    def data() -> str:
        prune_stages(recipe, 1, 5, standin_options, logs / "stage1-5.log")
        return f"{paths.data}, token list {paths.token_list}"

    steps.append(Step("data", "1-5", data, after=("setup",), marker=recipe.marker(paths.data, "data")))
    if settings.uses_lm:
        def lm() -> str:
            prune_stages(recipe, 6, 8, [*standin_options, "--use_lm", "true"], logs / "stage6-8.log")
            return f"LM {paths.lm_exp}"

        steps.append(Step("lm_train", "6-8", lm, after=("data",), marker=recipe.marker(paths.lm_exp, "train"),
                          priority=SERIAL_PRIORITY))
        steps += lm_pruning_steps(recipe)

    def standin() -> str:
        if settings.standin != "ctc":  # run.sh trains no stand-in when the checkpoint exists
            return copy_committed_standin(recipe.paths.ssl_checkpoint, settings.standin)
        train_args = _join(recipe.train_args(settings.pretrain_steps, settings.batch_size))
        # run.sh trains the stand-in while its encoder checkpoint is missing, and extracts it.
        recipe.paths.ssl_checkpoint.unlink(missing_ok=True)
        prune_stages(recipe, 10, 10, ["--standin_args", train_args], logs / "stage10-11_standin.log")
        if not recipe.paths.ssl_checkpoint.is_file():
            raise DemoError(f"run.sh did not write {recipe.paths.ssl_checkpoint}; "
                            f"see {logs / 'stage10-11_standin.log'}")
        return f"{recipe.paths.ssl_checkpoint}"

    steps.append(Step(SSL_STANDIN, "10-11", standin, after=("data",),
                      marker=recipe.marker(paths.exp(SSL_STANDIN), "train")))
    steps += latency_table_steps(recipe)

    decodes = []
    int8 = recipe.settings.int8_sizes()
    for system in settings.systems:
        def train_and_decode(system: System = system) -> str:
            options = [f"--{task}_config", f"conf/train_{task}_pruned_ssl.yaml", f"--{task}_tag", system.name,
                       f"--{task}_args", _join(recipe.system_args(system)), f"--inference_{task}_model", "latest.pth",
                       "--inference_tag", INFERENCE_TAG]
            if task == "asr":
                options += ["--use_lm", "false"]
            timing = prune_stages(recipe, 11, 11, options, logs / f"stage11_{system.name}.log")
            took = recipe.record_training_time(paths.exp(system.name), timing, settings.training_steps(system))
            prune_stages(recipe, 12, 12, options, logs / f"stage12_{system.name}.log")
            return f"{took}; " + ", ".join(f"{paths.decode_dir(size.name) / 'text'}" for size in system.sizes)

        steps.append(Step(f"train_decode_{system.name}", "11-12", train_and_decode, after=training_after(system),
                          marker=recipe.marker(paths.exp(system.name), "train_decode")))
        trained = steps[-1].name
        decodes.append(trained)
        for size in system.sizes:
            if size not in int8:
                continue

            def int8_decode(size: SystemSize = size) -> str:
                options = [f"--{task}_exp", paths.decode_exp(size.name).relative_to(paths.root), "--export", "false",
                           f"--inference_{task}_model", "latest.pth", "--inference_tag", INT8_TAG,
                           "--inference_args", "--quantize_asr_model true"]
                if task == "asr":
                    options += ["--use_lm", "false"]
                log_name = size.name.replace("/", "_")
                prune_stages(recipe, 12, 12, options, logs / f"stage12_{log_name}_{INT8_TAG}.log")
                return f"{paths.decode_dir(size.name, INT8_TAG) / 'text'}"

            steps.append(Step(f"decode_{size.name}_int8", "12", int8_decode, after=(trained,),
                              marker=recipe.marker(paths.decode_dir(size.name, INT8_TAG), "decode")))
            decodes.append(steps[-1].name)

    if settings.uses_lm:
        fusion = next(system for system in settings.systems if system.name == settings.fusion_system)
        for lm in fusion_lms(settings, paths):
            def fusion_decode(lm: Dict = lm) -> str:
                options = [f"--{task}_exp", paths.decode_exp(fusion.name).relative_to(paths.root), "--export", "false",
                           f"--inference_{task}_model", "latest.pth", "--use_lm", "true",
                           "--lm_exp", lm["config"].parent.relative_to(paths.root),
                           "--inference_lm", lm["model_file"].name, "--inference_tag", lm["inference_tag"],
                           "--inference_args", f"--lm_weight {settings.lm_weight}"]
                prune_stages(recipe, 12, 12, options, logs / f"stage12_{fusion.name}_{lm['inference_tag']}.log")
                return f"{paths.decode_dir(fusion.name, lm['inference_tag']) / 'text'}"

            lm_step = "lm_train" if lm["pruning"] is None else f"lm_prune_{lm['pruning'].name}"
            steps.append(Step(f"decode_{fusion.name}_lm_{lm['name']}", "12", fusion_decode,
                              after=(f"train_decode_{fusion.name}", lm_step),
                              marker=recipe.marker(paths.decode_dir(fusion.name, lm["inference_tag"]), "decode")))
            decodes.append(steps[-1].name)

    steps.append(Step("score", "13", recipe.score_all, after=tuple(decodes)))
    return steps
