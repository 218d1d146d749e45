"""The recipe object: training length and each system's options, timed processes, the stand-in."""

import json
import sys

import pytest
import yaml

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


def test_a_committed_stand_in_is_copied_where_the_trained_one_would_be(tmp_path):
    source = tmp_path / "committed"
    source.mkdir()
    with pytest.raises(DemoError, match="run 'make pretrain'"):
        demo_recipe.copy_committed_standin(tmp_path / "exp" / "ssl_encoder.pth", "pretrained", source)
    with pytest.raises(DemoError, match="run 'make standin'"):
        demo_recipe.copy_committed_standin(tmp_path / "exp" / "ssl_encoder.pth", "ctc_committed", source)
    (source / "ssl_encoder.pth").write_bytes(b"weights")
    (source / "ssl_encoder.json").write_text("{}")
    (source / "pretrain.json").write_text('{"settings": {"steps": 7}, "hours": 1.5, "curve": [{"loss": 2.5}]}')
    summary = demo_recipe.copy_committed_standin(tmp_path / "exp" / "ssl_encoder.pth", "pretrained", source)
    assert "7 steps on 1.50 h" in summary and "2.500" in summary
    assert (tmp_path / "exp" / "ssl_encoder.pth").read_bytes() == b"weights"
    assert (tmp_path / "exp" / "ssl_encoder.json").is_file()
    (source / "standin.json").write_text('{"steps": 2000, "valid_cer": 0.0913}')
    summary = demo_recipe.copy_committed_standin(tmp_path / "exp2" / "ssl_encoder.pth", "ctc_committed", source)
    assert "committed CTC stand-in (2000 steps" in summary and "0.091" in summary
    assert (tmp_path / "exp2" / "standin.json").is_file()
    with pytest.raises(ValueError, match="standin must be one of"):
        DemoSettings(standin="random")


def test_the_whole_model_and_latency_systems_get_their_budgets_on_top_of_the_fine_tuning_config(tmp_path):
    """A whole-model system: the config's frontend pruning settings moved to model_conf.pruning and the
    encoder swapped for its prunable twin, all of it a valid ModelPruningConfig; a latency system: the
    run's latency table, profiled by a step that its fine-tuning waits for."""
    from espnet_prune.demo.direct_mode import direct_steps
    from espnet_prune.pruning.config import ModelPruningConfig

    settings = DemoSettings(systems=(System("dense"), System("whole_model", 0.8), System("hj_latency", 0.8)),
                            lm_prunings=())
    recipe = DemoRecipe(settings, DemoPaths(tmp_path, "asr"), progress=Recorder())
    args = [str(arg) for arg in recipe.system_args(System("whole_model", 0.8))]
    assert args[args.index("--encoder") + 1] == "pruned_transformer"
    assert "pruning=null" in args
    model_conf = [args[i + 1] for i, arg in enumerate(args) if arg == "--model_conf"]
    values: dict = {}
    for item in model_conf:
        key, value = item.split("=", 1)
        *parents, last = key.split(".")[1:]
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = yaml.safe_load(value)
    config = ModelPruningConfig.from_dict(values)
    assert (config.metric, config.target, config.reference_seconds) == ("macs", 0.8, settings.reference_seconds)
    assert config.reg_lr == recipe.finetune_pruning["reg_lr"] and config.warmup_steps == settings.prune_warmup_steps
    assert (config.decoding.beam_size, config.decoding.ctc_weight) == (settings.beam_size, 1.0)
    args = [str(arg) for arg in recipe.system_args(System("hj_latency", 0.8))]
    assert f"pruning.latency_table={recipe.paths.latency_table}" in args and "pruning.metric=latency" in args
    steps = {step.name: step for step in direct_steps(recipe)}
    assert steps["latency_table"].after == ("ssl_standin",)
    assert "latency_table" in steps["train_hj_latency_0.80"].after
    assert "latency_table" not in steps["train_whole_model_0.80"].after
    no_latency = DemoRecipe(DemoSettings(systems=(System("dense"),), lm_prunings=()), DemoPaths(tmp_path, "asr"),
                            progress=Recorder())
    assert "latency_table" not in {step.name for step in direct_steps(no_latency)}


def test_another_seed_fine_tunes_with_the_demo_seed_plus_its_own(tmp_path):
    settings = DemoSettings(systems=(System("dense"), System("hj_macs", 0.5, seed=2)), seed=10)
    recipe = DemoRecipe(settings, DemoPaths(tmp_path, "asr"), progress=Recorder())
    for system, seed in zip(settings.systems, ("10", "12")):
        args = [str(arg) for arg in recipe.system_args(system)]
        assert args[args.index("--seed") + 1] == seed


def test_make_standin_saves_the_trained_stand_in_with_its_validation_curve(tmp_path):
    paths = DemoPaths(tmp_path / "run", "asr")
    experiment = paths.exp(layout.SSL_STANDIN)
    experiment.mkdir(parents=True)
    epoch = "INFO: {}epoch results: [train] loss_ctc=9.0, cer_ctc=0.9, [valid] loss_ctc=5.0, cer_ctc={}, loss=5.0\n"
    (experiment / "train.log").write_text("start\n" + epoch.format(1, 0.75) + epoch.format(2, 0.25))
    paths.ssl_checkpoint.write_bytes(b"weights")
    paths.ssl_checkpoint.with_suffix(".json").write_text("{}")
    paths.data.mkdir(parents=True)
    (paths.data / "corpus.json").write_text('{"task": "asr", "seed": 0, "num_train": 30, "voices": {}}')
    with pytest.raises(DemoError, match="--standin ctc"):
        demo_recipe.save_standin(DemoSettings(), paths, tmp_path / "saved")
    saved = demo_recipe.save_standin(DemoSettings(standin="ctc", pretrain_steps=20), paths, tmp_path / "saved")
    record = json.loads((saved / "standin.json").read_text())
    assert record["valid_cer_per_epoch"] == [0.75, 0.25] and record["valid_cer"] == 0.25 and record["steps"] == 20
    assert record["corpus"] == {"task": "asr", "seed": 0, "num_train": 30}
    assert (saved / "ssl_encoder.pth").read_bytes() == b"weights"
    # What the demo then copies back (--standin ctc_committed).
    summary = demo_recipe.copy_committed_standin(tmp_path / "again" / "ssl_encoder.pth", "ctc_committed", saved)
    assert "20 steps" in summary and "0.250" in summary


def test_the_committed_stand_ins_are_in_the_repository():
    """The default demo fine-tunes from the committed CTC stand-in: its files and record exist and it
    was trained as ``--standin ctc`` trains one."""
    for standin, directory in layout.COMMITTED_STANDINS.items():
        record = "pretrain.json" if standin == "pretrained" else "standin.json"
        for name in ("ssl_encoder.pth", "ssl_encoder.json", record):
            assert (directory / name).is_file(), (standin, name)
    ctc = json.loads((layout.COMMITTED_STANDINS["ctc_committed"] / "standin.json").read_text())
    assert ctc["steps"] == DemoSettings().pretrain_steps and 0.0 < ctc["valid_cer"] < 0.3
    # Both tasks fine-tune from it: its architecture is both fine-tuning configs'.
    committed = json.loads((layout.COMMITTED_STANDINS["ctc_committed"] / "ssl_encoder.json").read_text())
    for task in ("asr", "slu"):
        conf = layout.RECIPES / f"{task}1" / "conf" / f"train_{task}_pruned_ssl.yaml"
        arch = yaml.safe_load(conf.read_text())["frontend_conf"]["arch"]
        assert [list(layer) for layer in arch["conv_layers"]] == committed["conv_layers"]
        assert (arch["embed_dim"], arch["num_layers"]) == (committed["embed_dim"], committed["num_layers"])
        assert (arch["ffn_dims"], arch["num_heads"]) == (committed["ffn_dims"], committed["num_heads"])


def test_a_multi_size_system_trains_every_size_with_its_ramp_and_hold(tmp_path):
    system = System("hj_macs_multi", targets=(0.8, 0.6, 0.4))
    settings = DemoSettings(systems=(System("dense"), system), int8=True)
    recipe = DemoRecipe(settings, DemoPaths(tmp_path, "asr"), progress=Recorder())
    args = [str(arg) for arg in recipe.system_args(system)]
    assert args[:6] == ["--max_epoch", "12", "--num_iters_per_epoch", "100", "--scheduler_conf", "total_steps=1200"]
    assert "pruning.targets=[0.8,0.6,0.4]" in args and "pruning.hold_steps=200" in args
    assert "pruning.warmup_steps=200" in args
    assert [size.name for size in settings.int8_sizes()] == [size.name for size in system.sizes]
    assert DemoSettings(systems=(System("dense"), system)).int8_sizes() == []  # int8 off by default
