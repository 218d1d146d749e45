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


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    demo_cli.check_settings_file(tmp_path, DemoSettings(), None)
    demo_cli.check_settings_file(tmp_path, DemoSettings(), None)  # the same settings: fine
    with pytest.raises(DemoError, match="other settings \\(num_train differ\\)"):
        demo_cli.check_settings_file(tmp_path, DemoSettings(num_train=10), None)
    assert Path(tmp_path / "settings.json").is_file()
