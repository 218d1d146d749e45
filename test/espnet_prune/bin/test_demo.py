"""The demo's command line: settings from --size and the options, and a rerun's settings check."""

from pathlib import Path

import pytest

from espnet_prune.bin import demo as demo_cli
from espnet_prune.demo.settings import SIZES, DemoError, DemoSettings, System


def test_cli_settings_come_from_the_size_and_the_options():
    args = demo_cli.get_parser().parse_args(["--size", "tiny", "--num_train", "20", "--systems", "dense,hj_macs:0.4",
                                             "--lm_targets", "0.6"])
    settings = demo_cli.settings_from_args(args)
    assert settings.num_train == 20 and settings.pretrain_steps == SIZES["tiny"]["pretrain_steps"]
    assert settings.systems == (System("dense"), System("hj_macs", 0.4)) and settings.lm_targets == (0.6,)
    with pytest.raises(SystemExit):
        demo_cli.get_parser().parse_args(["--systems", "hj_macs:2"])
    # int8 decodings: on in tiny (CI checks them), off by default, and either way by option.
    parse = demo_cli.get_parser().parse_args
    assert demo_cli.settings_from_args(parse(["--size", "tiny"])).int8
    assert not demo_cli.settings_from_args(parse([])).int8 and demo_cli.settings_from_args(parse(["--int8"])).int8
    assert not demo_cli.settings_from_args(parse(["--size", "tiny", "--no-int8"])).int8
    paper = demo_cli.settings_from_args(parse(["--size", "paper", "--systems", "dense,dense@1"]))
    assert [system.name for system in paper.systems] == ["dense", "dense_seed1"] and not paper.lm_prunings


def test_the_help_names_the_defaults_as_the_options_spell_them():
    text = demo_cli.get_parser().format_help().replace("\n", " ")
    assert ",".join(system.spelling for system in DemoSettings().systems) in text.replace(" ", "")


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    demo_cli.check_settings_file(tmp_path, DemoSettings(), None)
    demo_cli.check_settings_file(tmp_path, DemoSettings(), None)  # the same settings: fine
    with pytest.raises(DemoError, match="other settings \\(num_train differ\\)"):
        demo_cli.check_settings_file(tmp_path, DemoSettings(num_train=10), None)
    assert Path(tmp_path / "settings.json").is_file()


def test_a_directory_that_holds_something_else_is_refused(tmp_path):
    from test.espnet_prune.utils.test_output_dir import espnet_experiment, snapshot

    other = espnet_experiment(tmp_path / "exp")
    before = snapshot(other)
    with pytest.raises(DemoError, match=f"refusing to write into {other}"):
        demo_cli.check_settings_file(other, DemoSettings(), None)
    assert snapshot(other) == before
