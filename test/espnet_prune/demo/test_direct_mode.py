"""Direct mode: asr.sh's stage 3-4 data handling, shape files, and the decodings it plans
(int8 of every compact model, every size of a multi-size system)."""

from pathlib import Path

import numpy as np

from espnet_prune.demo import direct_mode, layout, pipeline
from espnet_prune.demo.layout import DemoPaths
from espnet_prune.demo.recipe import DemoRecipe
from espnet_prune.demo.settings import SIZES, DemoSettings, System
from espnet_prune.demo.steps import SERIAL_PRIORITY
from espnet_prune.utils.kaldi_data import Utterance, read_text, validate_data_dir, write_data_dir
from test.espnet_prune.demo.recorder import Recorder


def tone(seconds):
    return (0.3 * np.sin(np.arange(int(seconds * 16000)) / 5.0)).astype(np.float32)


def test_format_and_filter_data_dirs_as_asr_sh_does(tmp_path):
    source = write_data_dir(tmp_path / "data" / "train", [
        Utterance("s1-a", "s1", tone(1.0), "turn on the light"),
        Utterance("s1-b", "s1", tone(0.05), "too short"),
        Utterance("s2-a", "s2", tone(0.5), "play music")])
    (source / "transcript").write_text((source / "text").read_text())
    org = tmp_path / "dump" / "raw" / "org" / "train"
    assert direct_mode.format_data_dir(source, org, ["text", "transcript"]) == 3
    assert (org / "utt2num_samples").read_text() == "s1-a 16000\ns1-b 800\ns2-a 8000\n"
    assert (org / "feats_type").read_text() == "raw\n"
    dump = tmp_path / "dump" / "raw" / "train"
    assert direct_mode.filter_data_dir(org, dump, ["text", "transcript"]) == 2
    assert validate_data_dir(dump) == ["s1-a", "s2-a"]
    assert read_text(dump, "transcript") == {"s1-a": "turn on the light", "s2-a": "play music"}
    assert (dump / "utt2num_samples").read_text() == "s1-a 16000\ns2-a 8000\n"


def test_shape_files_get_the_vocabulary_size(tmp_path):
    shape = tmp_path / "text_shape"
    shape.write_text("u1 12\nu2 7\n")
    assert direct_mode.append_vocabulary_size(shape, 29).read_text() == "u1 12,29\nu2 7,29\n"
    assert (tmp_path / "text_shape.char").exists()


def test_every_compact_system_is_decoded_again_with_espnets_int8_flag(tmp_path):
    settings = DemoSettings(**SIZES["tiny"])
    recipe = DemoRecipe(settings, DemoPaths(tmp_path, "asr"), progress=Recorder())
    steps = {step.name: step for step in pipeline.plan(recipe)}
    pruned = [system.name for system in settings.systems if system.method != "dense"]
    assert [name for name in steps if name.endswith("_int8")] == [f"decode_{name}_int8" for name in pruned]
    assert set(f"decode_{name}_int8" for name in pruned) <= set(steps["score"].after)
    assert (pruned[0], layout.INT8_TAG) in recipe.decodings()
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


def test_every_size_of_a_multi_size_system_is_decoded_from_its_exported_directory(tmp_path):
    system = System("hj_macs_multi", targets=(0.8, 0.6, 0.4))
    settings = DemoSettings(systems=(System("dense"), System("hj_macs", 0.8), system), int8=True)
    recipe = DemoRecipe(settings, DemoPaths(tmp_path, "asr"), progress=Recorder())
    steps = {step.name: step for step in direct_mode.direct_steps(recipe)}
    assert steps[f"export_{system.name}"].after == (f"train_{system.name}",)
    for size in system.sizes:
        assert steps[f"decode_{size.name}"].after == (f"export_{system.name}",)
        assert {f"decode_{size.name}", f"decode_{size.name}_int8"} <= set(steps["score"].after)
        assert (size.name, layout.INFERENCE_TAG) in recipe.decodings()
        assert recipe.paths.decode_dir(size.name) == (
            tmp_path / "exp" / f"asr_{system.name}_pruned" / size.size_dir / "decode" / "test")


def test_the_lm_chain_starts_before_the_fine_tunings_that_would_fill_every_lane(tmp_path):
    recipe = DemoRecipe(DemoSettings(), DemoPaths(tmp_path, "asr"), progress=Recorder())
    steps = {step.name: step for step in pipeline.plan(recipe)}
    lm = [name for name in steps if name.startswith("lm_")]
    assert set(lm) >= {"lm_stats", "lm_train", "lm_perplexity", "lm_prune_data_lowrank_incremental"}
    assert {steps[name].priority for name in lm} == {SERIAL_PRIORITY}
    assert all(steps[name].priority > SERIAL_PRIORITY for name in steps if name.startswith("train_"))
