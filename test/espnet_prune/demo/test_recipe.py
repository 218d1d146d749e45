"""The recipe object: training length and each system's options, timed processes, the stand-in."""

import json
import sys

import pytest

from espnet_prune.demo import layout
from espnet_prune.demo import recipe as demo_recipe
from espnet_prune.demo.layout import DemoPaths
from espnet_prune.demo.recipe import DemoRecipe
from espnet_prune.demo.settings import DemoError, DemoSettings, System
from test.espnet_prune.demo.recorder import Recorder


def test_training_length_and_one_cycle_schedule_agree(tmp_path):
    settings = DemoSettings(steps_per_epoch=100)
    recipe = DemoRecipe(settings, DemoPaths(tmp_path, "asr"), progress=Recorder())
    args = [str(arg) for arg in recipe.train_args(250, batch_size=8)]
    assert args == ["--max_epoch", "3", "--num_iters_per_epoch", "100", "--scheduler_conf", "total_steps=300",
                    "--seed", "0", "--batch_size", "8"]
    system_args = [str(arg) for arg in recipe.system_args(System("hj_macs", 0.5))]
    assert f"checkpoint={recipe.paths.ssl_checkpoint}" in system_args
    assert "pruning.target=0.5" in system_args and "pruning.reference_seconds=5.0" in system_args


def test_a_command_is_timed_by_wall_and_cpu_seconds(tmp_path):
    recipe = DemoRecipe(DemoSettings(), DemoPaths(tmp_path, "asr"), progress=Recorder())
    timing = recipe.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                         "while time.process_time() < end: pass"], tmp_path / "burn.log")
    assert timing["cpu_seconds"] >= 0.3 and timing["wall_seconds"] >= 0.3
    summary = recipe.record_training_time(tmp_path, timing, 10)
    assert "10 steps in" in summary
    assert json.loads(layout.training_time_file(tmp_path).read_text())["cpu_seconds"] == timing["cpu_seconds"]
    with pytest.raises(DemoError, match="exit status 3"):
        recipe.run([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "fail.log")


def test_the_pretrained_stand_in_is_copied_where_the_ctc_one_would_be(tmp_path):
    source = tmp_path / "committed"
    source.mkdir()
    with pytest.raises(DemoError, match="run 'make pretrain'"):
        demo_recipe.copy_pretrained_standin(tmp_path / "exp" / "ssl_encoder.pth", source)
    (source / "ssl_encoder.pth").write_bytes(b"weights")
    (source / "ssl_encoder.json").write_text("{}")
    (source / "pretrain.json").write_text('{"settings": {"steps": 7}, "hours": 1.5, "curve": [{"loss": 2.5}]}')
    summary = demo_recipe.copy_pretrained_standin(tmp_path / "exp" / "ssl_encoder.pth", source)
    assert "7 steps on 1.50 h" in summary and "2.500" in summary
    assert (tmp_path / "exp" / "ssl_encoder.pth").read_bytes() == b"weights"
    assert (tmp_path / "exp" / "ssl_encoder.json").is_file()
    with pytest.raises(ValueError, match="standin must be one of"):
        DemoSettings(standin="random")


def test_a_multi_size_system_trains_every_size_with_its_ramp_and_hold(tmp_path):
    system = System("hj_macs_multi", targets=(0.8, 0.6, 0.4))
    settings = DemoSettings(systems=(System("dense"), system))
    recipe = DemoRecipe(settings, DemoPaths(tmp_path, "asr"), progress=Recorder())
    args = [str(arg) for arg in recipe.system_args(system)]
    assert args[:6] == ["--max_epoch", "15", "--num_iters_per_epoch", "100", "--scheduler_conf", "total_steps=1500"]
    assert "pruning.targets=[0.8,0.6,0.4]" in args and "pruning.hold_steps=300" in args
    assert "pruning.warmup_steps=200" in args
    assert [size.name for size in recipe.int8_systems()] == [size.name for size in system.sizes]
