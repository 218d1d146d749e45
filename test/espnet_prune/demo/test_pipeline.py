"""The demo's plan: systems and settings, the step runner (order, lanes, priorities, markers,
failures), asr.sh's stage 3-4 data handling, the recipe's configs, and the CLI's settings."""

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from espnet_prune.bin import demo as demo_cli
from espnet_prune.demo import pipeline
from espnet_prune.demo.pipeline import DemoError, DemoSettings, LMPruning, Step, System, run_steps
from espnet_prune.pruning.config import PruningConfig
from espnet_prune.utils.kaldi_data import Utterance, read_text, validate_data_dir, write_data_dir


class Recorder:
    """Progress that keeps its lines."""

    def __init__(self):
        self.lines = []
        self.stream = self
        self.start = time.monotonic()

    def say(self, text):
        self.lines.append(text)

    def elapsed(self):
        return time.monotonic() - self.start


# ------------------------------------------------------------------------------ systems, settings


def test_systems_name_themselves_and_set_the_pruning_of_the_frontend():
    assert System("dense").name == "dense"
    assert System("dense").frontend_overrides(300) == ["pruning=null"]
    macs = System("hj_macs", 0.5)
    assert macs.name == "hj_macs_0.50"
    assert macs.frontend_overrides(300) == ["pruning.warmup_steps=300", "pruning.metric=macs", "pruning.target=0.5"]
    assert "pruning.metric=params" in System("hj_params", 0.6).frontend_overrides(10)
    separate = System("separate", 0.4).frontend_overrides(10)
    assert "pruning.cnn_target=0.4" in separate and "pruning.transformer_target=0.4" in separate
    assert pipeline.parse_system("hj_params:0.6") == System("hj_params", 0.6)
    assert pipeline.parse_system("dense") == System("dense")
    # The probe: the dense model from random initialisation (no checkpoint, so arch alone builds it).
    assert System("scratch").name == "scratch"
    assert System("scratch").frontend_overrides(10) == ["pruning=null", "checkpoint=null"]
    transformer = System("transformer_only", 0.7).frontend_overrides(10)
    units = yaml.safe_load(next(item for item in transformer if item.startswith("pruning.units=")).split("=", 1)[1])
    assert set(units) == set(pipeline.LAYER_UNITS) and "conv" not in units
    assert "pruning.target=0.7" in transformer and "pruning.metric=macs" in transformer


@pytest.mark.parametrize("text, message", [("hj_macs", "needs a target"), ("dense:0.5", "takes no target"),
                                           ("scratch:0.5", "takes no target"), ("transformer_only", "needs a target"),
                                           ("hj_macs:1.5", "keep ratio in"), ("magnitude:0.5", "unknown pruning")])
def test_bad_systems_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        pipeline.parse_system(text)


def test_lm_pruning_choices_and_target_directories_match_lm_prune():
    from espnet_prune.bin import lm_prune

    parser = lm_prune.get_parser()
    choices = {action.dest: tuple(action.choices) for action in parser._actions if action.choices}
    assert set(choices["criterion"]) == set(pipeline.LM_CRITERIA)
    assert set(choices["method"]) == set(pipeline.LM_METHODS)
    assert set(choices["scheduler"]) == set(pipeline.LM_SCHEDULERS)
    for target in (0.5, 0.25, 0.125, 0.7, 0.333):
        assert pipeline.lm_target_name(target) == lm_prune.target_name(target)
    assert pipeline.parse_lm_pruning("data/lowrank/incremental") == LMPruning("data", "lowrank", "incremental")
    with pytest.raises(ValueError, match="criterion/method/scheduler"):
        pipeline.parse_lm_pruning("data/lowrank")


def test_settings_are_checked():
    with pytest.raises(ValueError, match="must be below finetune_steps"):
        DemoSettings(finetune_steps=100, prune_warmup_steps=100)
    with pytest.raises(ValueError, match="fusion_system 'hj_macs_0.30' is not one of"):
        DemoSettings(fusion_system="hj_macs_0.30")
    with pytest.raises(ValueError, match="systems repeat"):
        DemoSettings(systems=(System("dense"), System("dense")))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DemoSettings(batch_size=0)
    assert not DemoSettings(task="slu").uses_lm and DemoSettings().uses_lm
    assert DemoSettings().as_dict()["systems"] == ["dense", "hj_macs_0.80", "hj_macs_0.50", "hj_params_0.60",
                                                  "separate_0.80", "transformer_only_0.80"]


def test_training_length_and_one_cycle_schedule_agree(tmp_path):
    settings = DemoSettings(steps_per_epoch=100)
    recipe = pipeline.DemoRecipe(settings, pipeline.DemoPaths(tmp_path, "asr"), progress=Recorder())
    args = [str(arg) for arg in recipe.train_args(250, batch_size=8)]
    assert args == ["--max_epoch", "3", "--num_iters_per_epoch", "100", "--scheduler_conf", "total_steps=300",
                    "--seed", "0", "--batch_size", "8"]
    system_args = [str(arg) for arg in recipe.system_args(System("hj_macs", 0.5))]
    assert f"checkpoint={recipe.paths.ssl_checkpoint}" in system_args
    assert "pruning.target=0.5" in system_args and "pruning.reference_seconds=5.0" in system_args


# ------------------------------------------------------------------------------ the step runner


def test_steps_run_after_their_dependencies_and_at_most_lanes_at_a_time():
    events, lock = [], threading.Lock()
    running = [0]
    peak = [0]

    def work(name):
        def action():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                events.append(("start", name))
            time.sleep(0.05)
            with lock:
                running[0] -= 1
                events.append(("end", name))
            return f"{name} ok"
        return action

    steps = [Step("a", "1", work("a")), Step("b", "2", work("b"), after=("a",)),
             Step("c", "2", work("c"), after=("a",)), Step("d", "3", work("d"), after=("b", "c")),
             Step("e", "9", work("e"))]
    recorder = Recorder()
    run_steps(steps, lanes=2, progress=recorder)
    order = [name for kind, name in events if kind == "end"]
    assert set(order) == set("abcde") and peak[0] == 2
    for before, after in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert events.index(("end", before)) < events.index(("start", after))
    assert any("stage 3      d: done in" in line and "-- d ok" in line for line in recorder.lines)


def test_lower_priority_numbers_start_first():
    order = []
    steps = [Step("lm", "6", lambda: order.append("lm") or "", priority=1),
             Step("asr", "10", lambda: order.append("asr") or "", priority=0)]
    run_steps(steps, lanes=1, progress=Recorder())
    assert order == ["asr", "lm"]


def test_markers_make_a_rerun_skip_finished_steps(tmp_path):
    calls = []
    marker = tmp_path / "exp" / ".done_x"
    steps = [Step("x", "11", lambda: calls.append("x") or "trained", marker=marker)]
    run_steps(steps, lanes=2, progress=Recorder())
    assert marker.read_text() == "trained\n"
    recorder = Recorder()
    run_steps(steps, lanes=2, progress=recorder)
    assert calls == ["x"] and "done before, skipped" in recorder.lines[0]


def test_a_skipped_step_readies_steps_listed_before_it(tmp_path):
    marker = tmp_path / ".done_lm"
    marker.write_text("trained\n")
    ran = []
    steps = [Step("decode_with_lm", "12", lambda: ran.append("decode") or "", after=("lm",)),
             Step("lm", "7", lambda: ran.append("lm") or "", marker=marker, priority=1)]
    run_steps(steps, lanes=2, progress=Recorder())
    assert ran == ["decode"]


def test_a_failure_stops_what_depends_on_it_and_is_reported(tmp_path):
    ran = []

    def fail():
        raise DemoError("exit status 1 of asr_train; last lines of train.log: boom")

    steps = [Step("bad", "11", fail, marker=tmp_path / ".done_bad"),
             Step("after_bad", "12", lambda: ran.append(1) or "", after=("bad",)),
             Step("other", "6", lambda: time.sleep(0.1) or ran.append(2) or "")]
    recorder = Recorder()
    with pytest.raises(DemoError, match="bad: exit status 1 of asr_train.*boom"):
        run_steps(steps, lanes=2, progress=recorder)
    assert ran == [2] and not (tmp_path / ".done_bad").exists()
    assert any("bad: FAILED" in line for line in recorder.lines)


def test_unknown_dependencies_and_cycles_are_errors():
    with pytest.raises(DemoError, match="unknown step"):
        run_steps([Step("a", "1", lambda: "", after=("nope",))], lanes=1, progress=Recorder())
    cycle = [Step("a", "1", lambda: "", after=("b",)), Step("b", "1", lambda: "", after=("a",))]
    with pytest.raises(DemoError, match="cycle"):
        run_steps(cycle, lanes=1, progress=Recorder())


# ------------------------------------------------------------------------------ stages 3-4, shapes


def tone(seconds):
    return (0.3 * np.sin(np.arange(int(seconds * 16000)) / 5.0)).astype(np.float32)


def test_format_and_filter_data_dirs_as_asr_sh_does(tmp_path):
    source = write_data_dir(tmp_path / "data" / "train", [
        Utterance("s1-a", "s1", tone(1.0), "turn on the light"),
        Utterance("s1-b", "s1", tone(0.05), "too short"),
        Utterance("s2-a", "s2", tone(0.5), "play music")])
    (source / "transcript").write_text((source / "text").read_text())
    org = tmp_path / "dump" / "raw" / "org" / "train"
    assert pipeline.format_data_dir(source, org, ["text", "transcript"]) == 3
    assert (org / "utt2num_samples").read_text() == "s1-a 16000\ns1-b 800\ns2-a 8000\n"
    assert (org / "feats_type").read_text() == "raw\n"
    dump = tmp_path / "dump" / "raw" / "train"
    assert pipeline.filter_data_dir(org, dump, ["text", "transcript"]) == 2
    assert validate_data_dir(dump) == ["s1-a", "s2-a"]
    assert read_text(dump, "transcript") == {"s1-a": "turn on the light", "s2-a": "play music"}
    assert (dump / "utt2num_samples").read_text() == "s1-a 16000\ns2-a 8000\n"


def test_shape_files_get_the_vocabulary_size(tmp_path):
    shape = tmp_path / "text_shape"
    shape.write_text("u1 12\nu2 7\n")
    assert pipeline.append_vocabulary_size(shape, 29).read_text() == "u1 12,29\nu2 7,29\n"
    assert (tmp_path / "text_shape.char").exists()


# ------------------------------------------------------------------------------ the recipe's configs


@pytest.mark.parametrize("task", ["asr", "slu"])
def test_fine_tuning_uses_the_stand_ins_architecture_and_sets_targets_per_system(task):
    conf = pipeline.RECIPES / f"{task}1" / "conf"
    standin = yaml.safe_load((conf / f"train_{task}_ssl_standin.yaml").read_text())
    finetune = yaml.safe_load((conf / f"train_{task}_pruned_ssl.yaml").read_text())
    assert standin["frontend"] == finetune["frontend"] == "pruned_ssl"
    assert standin["frontend_conf"]["arch"] == finetune["frontend_conf"]["arch"]
    assert "pruning" not in standin["frontend_conf"] and "checkpoint" not in standin["frontend_conf"]
    # run.sh writes the stand-in's encoder where the fine-tuning config loads it from.
    assert finetune["frontend_conf"]["checkpoint"] == f"exp/{task}_ssl_standin/ssl_encoder.pth"
    pruning = finetune["frontend_conf"]["pruning"]
    # The budget is a preset of the repository's conf/pruning; the config sets only the schedule.
    assert pruning["preset"] == "hj_macs0.6"
    assert not {"units", "metric", "target", "cnn_target", "transformer_target"} & set(pruning)
    resolved = PruningConfig.from_dict(pruning).to_dict()
    assert set(resolved["units"]) == {"conv", "head", "attn_layer", "interm", "ffn_layer"}
    assert (resolved["metric"], resolved["target"]) == ("macs", 0.6)
    # Every system's overrides give a valid budget on top of the preset.
    for system in (pipeline.System("hj_params", 0.5), pipeline.System("separate", 0.4),
                   pipeline.System("transformer_only", 0.7)):
        overrides = dict(item.split("=", 1) for item in system.frontend_overrides(10))
        values = {key.split(".", 1)[1]: yaml.safe_load(value) for key, value in overrides.items()}
        resolved = PruningConfig.from_dict({**pruning, **values}).to_dict()
        assert (resolved["target"] is None) == (system.method == "separate")
        assert ("conv" in resolved["units"]) == (system.method != "transformer_only")
    for config in (standin, finetune):
        assert config["model"] == "pruned_espnet" and config["model_conf"]["ctc_weight"] == 1.0
        assert config["scheduler"] == "onecyclelr"
        assert config["best_model_criterion"] == [["valid", "cer_ctc", "min"]]
    decode = yaml.safe_load((conf / f"decode_{task}.yaml").read_text())
    assert decode["ctc_weight"] == 1.0
    for script in ("run.sh", "local/data.sh"):
        assert (conf.parent / script).stat().st_mode & 0o111
    assert (conf.parent / "path.sh").resolve() == pipeline.TEMPLATE_PRUNE / "path.sh"
    run_sh = (conf.parent / "run.sh").read_text()
    assert f"{task}_config=conf/train_{task}_pruned_ssl.yaml" in run_sh and "../run_recipe.sh" in run_sh


# ------------------------------------------------------------------------------ the CLI


def test_cli_settings_come_from_the_size_and_the_options():
    args = demo_cli.get_parser().parse_args(["--size", "tiny", "--num_train", "20", "--systems", "dense,hj_macs:0.4",
                                             "--lm_targets", "0.6"])
    settings = demo_cli.settings_from_args(args)
    assert settings.num_train == 20 and settings.pretrain_steps == pipeline.SIZES["tiny"]["pretrain_steps"]
    assert settings.systems == (System("dense"), System("hj_macs", 0.4)) and settings.lm_targets == (0.6,)
    with pytest.raises(SystemExit):
        demo_cli.get_parser().parse_args(["--systems", "hj_macs:2"])


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    demo_cli.check_settings_file(tmp_path, DemoSettings(), None)
    demo_cli.check_settings_file(tmp_path, DemoSettings(), None)  # the same settings: fine
    with pytest.raises(DemoError, match="other settings \\(num_train differ\\)"):
        demo_cli.check_settings_file(tmp_path, DemoSettings(num_train=10), None)
    assert Path(tmp_path / "settings.json").is_file()


def test_every_compact_system_is_decoded_again_with_espnets_int8_flag(tmp_path):
    settings = DemoSettings(**pipeline.SIZES["tiny"])
    recipe = pipeline.DemoRecipe(settings, pipeline.DemoPaths(tmp_path, "asr"), progress=Recorder())
    steps = {step.name: step for step in recipe.steps()}
    pruned = [system.name for system in settings.systems if system.method != "dense"]
    assert [name for name in steps if name.endswith("_int8")] == [f"decode_{name}_int8" for name in pruned]
    assert set(f"decode_{name}_int8" for name in pruned) <= set(steps["score"].after)
    assert (pruned[0], pipeline.INT8_TAG) in recipe.decodings()
    # The step runs ESPnet's asr_inference on the compact model with --quantize_asr_model true.
    (tmp_path / "exp" / f"asr_{pruned[0]}").mkdir(parents=True)
    (tmp_path / "exp" / f"asr_{pruned[0]}" / "latest.pth").write_text("")
    calls = []

    def espnet(tool, args, log):  # what asr_inference leaves: its output directory
        calls.append((tool, [str(arg) for arg in args]))
        Path(calls[-1][1][calls[-1][1].index("--output_dir") + 1]).mkdir(parents=True)

    recipe.espnet = espnet
    steps[f"decode_{pruned[0]}_int8"].action()
    ((tool, args),) = calls
    assert tool == "asr_inference" and args[args.index("--quantize_asr_model") + 1] == "true"
    assert args[args.index("--asr_model_file") + 1].endswith(f"asr_{pruned[0]}_pruned/latest.pth")
    assert args[args.index("--output_dir") + 1].startswith(str(recipe.paths.decode_dir(pruned[0], "decode_int8")))


def test_int8_agreement_counts_identical_hypotheses(tmp_path):
    from espnet_prune.demo.report import format_int8, identical_hypotheses

    (tmp_path / "fp32").write_text("u1 turn on the light\nu2 stop\nu3 go\n")
    (tmp_path / "int8").write_text("u1 turn on the light\nu2 stop now\n")
    assert identical_hypotheses(tmp_path / "fp32", tmp_path / "int8") == (1, 3)  # u3 missing: different
    lines = format_int8("asr", {"entries": [dict(
        name="hj_macs_0.50", utterances=3, identical=1, agreement=1 / 3, fp32={"wer": 0.2, "cer": 0.1},
        int8={"wer": 0.25, "cer": 0.1}, change={"wer": 0.05, "cer": 0.0},
        frontend_modules={"int8_linear": 19, "float_linear": 0, "empty_linear": 0, "conv": 8})]})
    assert "1/3 (33%)" in lines[-1] and "+5.0%" in lines[-1] and "19/19" in lines[-1]
    assert format_int8("asr", None) == []


def test_the_pretrained_stand_in_is_copied_where_the_ctc_one_would_be(tmp_path):
    source = tmp_path / "committed"
    source.mkdir()
    with pytest.raises(DemoError, match="run 'make pretrain'"):
        pipeline.copy_pretrained_standin(tmp_path / "exp" / "ssl_encoder.pth", source)
    (source / "ssl_encoder.pth").write_bytes(b"weights")
    (source / "ssl_encoder.json").write_text("{}")
    (source / "pretrain.json").write_text('{"settings": {"steps": 7}, "hours": 1.5, "curve": [{"loss": 2.5}]}')
    summary = pipeline.copy_pretrained_standin(tmp_path / "exp" / "ssl_encoder.pth", source)
    assert "7 steps on 1.50 h" in summary and "2.500" in summary
    assert (tmp_path / "exp" / "ssl_encoder.pth").read_bytes() == b"weights"
    assert (tmp_path / "exp" / "ssl_encoder.json").is_file()
    with pytest.raises(ValueError, match="standin must be one of"):
        DemoSettings(standin="random")


# ------------------------------------------------------------------------------ several sizes from one run


def test_a_multi_size_system_names_its_sizes_and_resolves_to_targets_with_holds():
    system = pipeline.parse_system("hj_macs_multi:0.8/0.6/0.4")
    assert system == System("hj_macs_multi", targets=(0.8, 0.6, 0.4)) and system.multi_size
    assert system.name == "hj_macs_multi_0.80_0.60_0.40"
    assert [size.name for size in system.sizes] == [f"{system.name}/target{t}" for t in ("0.80", "0.60", "0.40")]
    assert [size.target for size in system.sizes] == [0.8, 0.6, 0.4]
    assert System("hj_macs", 0.5).sizes == [pipeline.SystemSize(System("hj_macs", 0.5))]
    with pytest.raises(ValueError, match="needs hold_steps"):
        system.frontend_overrides(200)
    # On top of the fine-tuning config's preset the overrides give three sizes, each held 300 steps.
    pruning = yaml.safe_load((pipeline.RECIPES / "asr1" / "conf" / "train_asr_pruned_ssl.yaml").read_text())
    overrides = dict(item.split("=", 1) for item in system.frontend_overrides(200, 300))
    values = {key.split(".", 1)[1]: yaml.safe_load(value) for key, value in overrides.items()}
    resolved = PruningConfig.from_dict({**pruning["frontend_conf"]["pruning"], **values})
    assert resolved.sizes() == [{"total": 0.8}, {"total": 0.6}, {"total": 0.4}]
    assert (resolved.metric, resolved.warmup_steps, resolved.effective_hold_steps) == ("macs", 200, 300)


@pytest.mark.parametrize("text, message", [
    ("hj_macs_multi:0.8/0.8", "strictly decreasing"), ("hj_macs_multi:0.6/0.8", "strictly decreasing"),
    ("hj_macs_multi:0.8", "two or more targets"), ("hj_macs_multi", "two or more targets"),
    ("hj_macs_multi:1.0/0.5", r"keep ratios in \(0, 1\)"), ("hj_macs_multi:0.8/0", r"keep ratios in \(0, 1\)"),
    ("hj_macs_multi:0.8/x", "could not convert"), ("hj_macs:0.8/0.6", "takes one target"),
    ("hj_macs_multi:0.801/0.8", "first two decimals")])
def test_bad_multi_size_systems_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        pipeline.parse_system(text)


def test_a_multi_size_run_holds_each_size_as_long_as_a_single_run_trains_after_its_ramp(tmp_path):
    system = pipeline.parse_system("hj_macs_multi:0.8/0.6/0.4")
    settings = DemoSettings(systems=(System("dense"), System("hj_macs", 0.8), system))
    assert settings.multisize_hold_steps == settings.finetune_steps - settings.prune_warmup_steps == 300
    assert settings.training_steps(system) == 3 * (200 + 300)
    assert settings.training_steps(System("hj_macs", 0.8)) == settings.finetune_steps
    recipe = pipeline.DemoRecipe(settings, pipeline.DemoPaths(tmp_path, "asr"), progress=Recorder())
    args = [str(arg) for arg in recipe.system_args(system)]
    assert args[:6] == ["--max_epoch", "15", "--num_iters_per_epoch", "100", "--scheduler_conf", "total_steps=1500"]
    assert "pruning.targets=[0.8,0.6,0.4]" in args and "pruning.hold_steps=300" in args
    assert "pruning.warmup_steps=200" in args
    # Every size is decoded (and in int8) from its directory of the export.
    steps = {step.name: step for step in recipe.steps()}
    for size in system.sizes:
        assert steps[f"decode_{size.name}"].after == (f"export_{system.name}",)
        assert f"decode_{size.name}_int8" in steps["score"].after
        assert (size.name, pipeline.INFERENCE_TAG) in recipe.decodings()
        assert recipe.paths.decode_dir(size.name) == (
            tmp_path / "exp" / f"asr_{system.name}_pruned" / size.size_dir / "decode" / "test")
    with pytest.raises(ValueError, match="has several sizes"):
        DemoSettings(systems=(system,), fusion_system=system.name)
    assert "multisize_warmup_steps" in settings.as_dict()


def test_a_command_is_timed_by_wall_and_cpu_seconds(tmp_path):
    recipe = pipeline.DemoRecipe(DemoSettings(), pipeline.DemoPaths(tmp_path, "asr"), progress=Recorder())
    timing = recipe.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                         "while time.process_time() < end: pass"], tmp_path / "burn.log")
    assert timing["cpu_seconds"] >= 0.3 and timing["wall_seconds"] >= 0.3
    summary = recipe.record_training_time(tmp_path, timing, 10)
    assert "10 steps in" in summary
    assert json.loads(pipeline.training_time_file(tmp_path).read_text())["cpu_seconds"] == timing["cpu_seconds"]
    with pytest.raises(DemoError, match="exit status 3"):
        recipe.run([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "fail.log")


def _entry(name, method, target, wer, macs_ratio, training=None, **extra):
    return dict(name=name, method=method, target=target, wer=wer, cer=wer / 2, macs=int(1000 * macs_ratio),
                macs_ratio=macs_ratio, params=int(500 * macs_ratio), params_ratio=macs_ratio, expected_ratio=None,
                latency_ms=1.0, training=training, **extra)


def test_the_report_sets_each_size_beside_the_separate_run_and_sums_their_training_time():
    from espnet_prune.demo.report import collect_multisize, format_multisize

    system = pipeline.parse_system("hj_macs_multi:0.8/0.6")
    settings = DemoSettings(systems=(System("hj_macs", 0.8), System("hj_macs", 0.6), system),
                            fusion_system="hj_macs_0.80")
    one_run = dict(wall_seconds=100.0, cpu_seconds=90.0, steps=1000)
    entries = [_entry("hj_macs_0.80", "hj_macs", 0.8, 0.20, 0.79, dict(wall_seconds=70.0, cpu_seconds=60.0, steps=600)),
               _entry("hj_macs_0.60", "hj_macs", 0.6, 0.25, 0.61, dict(wall_seconds=80.0, cpu_seconds=70.0, steps=600)),
               _entry(system.sizes[0].name, system.method, 0.8, 0.22, 0.80, one_run, step=500),
               _entry(system.sizes[1].name, system.method, 0.6, 0.24, 0.60, one_run, step=1000)]
    (comparison,) = collect_multisize(settings, entries)
    first, second = comparison["sizes"]
    assert first["one_run"]["name"] == system.sizes[0].name and first["separate"]["name"] == "hj_macs_0.80"
    assert first["difference"]["wer"] == pytest.approx(0.02) and second["difference"]["wer"] == pytest.approx(-0.01)
    assert first["one_run"]["macs_ratio"] == 0.80 and first["separate"]["macs_ratio"] == 0.79
    training = comparison["training"]
    assert training["one_run"] == one_run and training["complete"]
    assert training["separate"] == dict(wall_seconds=150.0, cpu_seconds=130.0, steps=1200)
    assert training["ratio"]["cpu_seconds"] == pytest.approx(90 / 130)
    assert comparison["schedule"]["total_steps"] == 2 * (200 + 300)
    lines = format_multisize("asr", [comparison])
    assert any(line.startswith("| 0.80 | 22.0 % | 80.0 % |") and line.endswith("| +2.0 |") for line in lines)
    assert any(line.startswith("| separate runs (hj_macs_0.80, hj_macs_0.60) | 1200 | 2m30s | 2m10s |")
               for line in lines)
    # Without a separate run at a target, the sum covers the others and says so.
    (partial,) = collect_multisize(settings, [entries[0]] + entries[2:])
    assert partial["sizes"][1]["separate"] is None and not partial["training"]["complete"]
    assert any("sum covers those that have one" in line for line in format_multisize("asr", [partial]))
    assert collect_multisize(DemoSettings(), entries[:2]) is None and format_multisize("asr", None) == []
