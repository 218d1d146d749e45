"""Recipe mode (ESPNET_ROOT set): the working directory becomes an ESPnet recipe linked to the
checkout, and the stages go through the recipe's own run.sh (egs2/espeak_demo/asr1/run.sh ->
run_recipe.sh -> TEMPLATE_prune/prune_stages.sh) to asr.sh with the demo's options. A fake
checkout's asr.sh records what it is given."""

import sys
from pathlib import Path

import pytest

from espnet_prune.demo import layout, pipeline, recipe_mode
from espnet_prune.demo.layout import DemoPaths
from espnet_prune.demo.recipe import DemoRecipe
from espnet_prune.demo.settings import DemoSettings, LMPruning, System

FAKE_TASK_SCRIPT = """#!/usr/bin/env bash
# Records its arguments, one a line, appending a separator per call.
printf '%s\\n' "$@" >> asr_sh_calls.txt
echo "----" >> asr_sh_calls.txt
"""


class Quiet:
    def __init__(self):
        self.stream = self

    def say(self, text):
        pass


@pytest.fixture
def fake_espnet(tmp_path):
    root = tmp_path / "espnet"
    template = root / "egs2" / "TEMPLATE" / "asr1"
    for name in ("pyscripts", "scripts", "utils", "steps"):
        (template / name).mkdir(parents=True)
    script = template / "asr.sh"
    script.write_text(FAKE_TASK_SCRIPT)
    script.chmod(0o755)
    return root


def recorded_calls(root: Path):
    text = (root / "asr_sh_calls.txt").read_text()
    return [call.strip("\n").split("\n") for call in text.split("----\n") if call.strip()]


def option(call, name):
    """The value asr.sh takes: the last one given (run.sh's defaults come before the demo's)."""
    return call[len(call) - 1 - call[::-1].index(name) + 1]


@pytest.fixture
def recipe(tmp_path, fake_espnet):
    settings = DemoSettings(systems=(System("dense"), System("hj_macs", 0.5)), fusion_system="hj_macs_0.50",
                            lm_prunings=(LMPruning("data", "lowrank", "incremental"),), lm_targets=(0.5,))
    recipe = DemoRecipe(settings, DemoPaths(tmp_path / "demo" / "asr1", "asr"), espnet_root=fake_espnet,
                        progress=Quiet())
    return recipe


def test_the_working_directory_becomes_a_recipe_linked_to_the_checkout(recipe, fake_espnet):
    recipe_mode.setup_recipe_dir(recipe)
    root = recipe.paths.root
    assert (root / "conf").resolve() == layout.RECIPES / "asr1" / "conf"
    assert (root / "run.sh").resolve() == layout.RECIPES / "asr1" / "run.sh"
    assert (root / "local" / "data.sh").is_file()
    assert (root / "path.sh").resolve() == layout.TEMPLATE_PRUNE / "path.sh"
    assert (root / "asr.sh").resolve() == (fake_espnet / "egs2" / "TEMPLATE" / "asr1" / "asr.sh").resolve()
    assert (root / "utils").resolve() == (fake_espnet / "egs2" / "TEMPLATE" / "asr1" / "utils").resolve()


def test_the_data_stages_run_asr_sh_with_the_demos_corpus_options(recipe):
    recipe_mode.setup_recipe_dir(recipe)
    steps = {step.name: step for step in pipeline.plan(recipe)}
    assert steps["data"].stage == "1-5" and steps["ssl_standin"].after == ("data",)
    steps["data"].action()
    (call,) = recorded_calls(recipe.paths.root)
    assert option(call, "--stage") == "1" and option(call, "--stop_stage") == "5"
    assert option(call, "--python") == f"{sys.executable} -m espnet_prune"
    assert option(call, "--local_data_opts").startswith(f"--num_train {recipe.settings.num_train} --num_dev")
    assert option(call, "--asr_exp") == "exp/asr_ssl_standin"
    assert option(call, "--token_type") == "char" and option(call, "--feats_normalize") == "none"
    assert option(call, "--lm_config") == "conf/train_lm.yaml"
    assert option(call, "--lm_train_text") == "data/lm_train.txt"
    # asr.sh would append --lm_args to the LM's directory name without --lm_tag.
    assert option(call, "--lm_tag") == layout.LM_TAG
    assert recipe.paths.lm_exp.name == f"lm_{layout.LM_TAG}"
    assert "--ngpu" in call and "--gpu_inference" in call  # run.sh's own options came first


def test_shallow_fusion_decodes_the_exported_model_with_each_lm(recipe):
    recipe_mode.setup_recipe_dir(recipe)
    steps = {step.name: step for step in pipeline.plan(recipe)}
    step = steps["decode_hj_macs_0.50_lm_data_lowrank_incremental_target0.50"]
    recipe.paths.ssl_checkpoint.parent.mkdir(parents=True)
    recipe.paths.ssl_checkpoint.write_bytes(b"")  # run.sh refuses to decode without the stand-in
    assert set(step.after) == {"train_decode_hj_macs_0.50", "lm_prune_data_lowrank_incremental"}
    step.action()
    (call,) = recorded_calls(recipe.paths.root)
    assert (option(call, "--stage"), option(call, "--stop_stage")) == ("12", "12")
    assert option(call, "--inference_asr_model") == "latest.pth"
    assert option(call, "--use_lm") == "true" and option(call, "--inference_lm") == "model.pth"
    assert option(call, "--lm_exp") == "exp/lm_pruned/data_lowrank_incremental/target0.50"
    assert option(call, "--inference_tag") == "decode_lm_data_lowrank_incremental_target0.50"
    assert option(call, "--inference_args") == "--lm_weight 0.3"
    assert option(call, "--asr_exp") == "exp/asr_hj_macs_0.50_pruned"  # the exported directory


def test_a_multi_size_system_is_trained_timed_then_exported_and_decoded_size_by_size(tmp_path, fake_espnet):
    system = System("hj_macs_multi", targets=(0.8, 0.6))
    settings = DemoSettings(systems=(System("hj_macs", 0.8), system), fusion_system="hj_macs_0.80", lm_prunings=(),
                            int8=True)
    recipe = DemoRecipe(settings, DemoPaths(tmp_path / "demo" / "asr1", "asr"), espnet_root=fake_espnet,
                        progress=Quiet())
    calls = []

    def run(command, log, cwd=None):
        calls.append([str(part) for part in command])
        return {"wall_seconds": 12.0, "cpu_seconds": 10.0}

    recipe.run = run
    steps = {step.name: step for step in pipeline.plan(recipe)}
    summary = steps[f"train_decode_{system.name}"].action()
    training, decoding = calls
    assert (option(training, "--stage"), option(training, "--stop_stage")) == ("11", "11")
    assert (option(decoding, "--stage"), option(decoding, "--stop_stage")) == ("12", "12")
    for call in calls:
        assert option(call, "--asr_tag") == system.name
        assert "--frontend_conf pruning.targets=[0.8,0.6]" in option(call, "--asr_args")
    timing = (recipe.paths.exp(system.name) / "train_time.json").read_text()
    assert '"cpu_seconds": 10.0' in timing and f'"steps": {settings.training_steps(system)}' in timing
    assert "target0.60/decode/test/text" in summary
    # prune_stages.sh exported every size to EXP_pruned/<size>/; each is decoded again in int8 from there.
    calls.clear()
    steps[f"decode_{system.sizes[1].name}_int8"].action()
    (call,) = calls
    assert option(call, "--asr_exp") == f"exp/asr_{system.name}_pruned/target0.60"
    assert option(call, "--inference_args") == "--quantize_asr_model true"
    assert steps[f"decode_{system.sizes[1].name}_int8"].after == (f"train_decode_{system.name}",)
