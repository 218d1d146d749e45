"""prune_stages.sh and the recipes' run.sh with a whole-model config (``model_conf.pruning``,
doc/whole_model.md) as with a frontend one: export after training, decoding and scoring of the
exported model, the unpruned baseline (``--model_conf pruning=null``) decoded as trained, and
several sizes from one run (``model_conf.pruning.targets``).

The recipe runs against the fake ESPnet checkout of ``test_recipes`` (recording asr.sh / slu.sh
and a recording ``--python``); which configs prune, and to which sizes, is asked of
``espnet_prune.export.sizes`` by prune_stages.sh itself.
"""

import yaml

from test.espnet_prune.recipes.test_recipes import (  # noqa: F401 (fixtures)
    fake_espnet,
    linked,
    option,
    task,
    trained,
)

#: The recipes' whole-model configs, their experiment directory as asr.sh / slu.sh name it, the
#: model file run.sh decodes and the inference config it decodes with.
WHOLE = {
    "asr": ("conf/train_asr_wav2vec2_conformer.yaml", "exp/asr_train_asr_wav2vec2_conformer_raw_en_bpe5000",
            "valid.acc.ave.pth", "conf/decode_asr_attention.yaml"),
    "slu": ("conf/train_slu_wav2vec2_whole.yaml", "exp/slu_train_slu_wav2vec2_whole_raw_en_word",
            "valid.acc.ave.pth", "conf/decode_slu.yaml"),
}


def set_pruning(exp_dir, pruning):
    """Replace ``model_conf.pruning`` of the trained config (``None``: the unpruned baseline)."""
    config = yaml.safe_load((exp_dir / "config.yaml").read_text())
    assert "pruning" in config["model_conf"] and "pruning" not in config["frontend_conf"]
    config["model_conf"]["pruning"] = pruning
    (exp_dir / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_whole_model_config_is_exported_and_the_compact_model_decoded(linked, task):  # noqa: F811
    recipe, run_recipe = linked
    config, exp, model, inference_config = WHOLE[task]
    trained(recipe, exp, model, config)
    result, calls = run_recipe("--stage", "10", f"--{task}_config", config)
    assert result.returncode == 0, result.stderr
    train, export, decode = calls
    assert option(train, f"{task}_exp") == exp and option(train, f"{task}_config") == config
    # run.sh decodes the whole model as its budget is priced for, from its best-accuracy models.
    for call in (train, decode):
        assert option(call, "inference_config") == inference_config
        assert option(call, f"inference_{task}_model") == model
    assert export[:3] == ["python", "-m", "espnet_prune.bin.export"]
    assert (option(export, "train_config"), option(export, "model_file"), option(export, "output_dir")) == (
        f"{exp}/config.yaml", f"{exp}/{model}", f"{exp}_pruned")
    assert (option(decode, "stage"), option(decode, f"{task}_exp")) == ("12", f"{exp}_pruned")
    if task == "slu":
        assert "|decode_slu/test|2|1|50.00|" in (recipe / f"{exp}_pruned" / "RESULTS.md").read_text()

    # An inference config given on the command line still wins over run.sh's choice.
    result, calls = run_recipe("--stage", "12", f"--{task}_config", config, "--inference_config", "conf/mine.yaml",
                               "--export", "false")
    assert result.returncode == 0, result.stderr
    (decode,) = calls
    assert option(decode, "inference_config") == "conf/mine.yaml" and option(decode, f"{task}_exp") == exp


def test_the_whole_model_baseline_decodes_the_trained_model(linked, task):  # noqa: F811
    recipe, run_recipe = linked
    config, exp, model, _ = WHOLE[task]
    exp = f"{exp}_model_confpruningnull"  # asr.sh / slu.sh add the args to the name
    set_pruning(trained(recipe, exp, model, config), None)
    result, calls = run_recipe("--stage", "12", f"--{task}_config", config, f"--{task}_args",
                               "--model_conf pruning=null")
    assert result.returncode == 0, result.stderr
    (decode,) = calls
    assert (option(decode, f"{task}_exp"), option(decode, f"inference_{task}_model")) == (exp, model)
    # Asking for an export of it is an error that names why.
    result, calls = run_recipe("--stage", "12", f"--{task}_config", config, f"--{task}_args",
                               "--model_conf pruning=null", "--export", "true")
    assert result.returncode != 0 and calls == []
    assert "does not prune (neither frontend_conf.pruning of a pruned_ssl" in result.stderr, result.stderr


def test_every_size_of_a_whole_model_run_is_exported_decoded_and_scored(linked, task):  # noqa: F811
    recipe, run_recipe = linked
    config, exp, model, inference_config = WHOLE[task]
    exp_dir = trained(recipe, exp, model, config)
    pruning = yaml.safe_load((exp_dir / "config.yaml").read_text())["model_conf"]["pruning"]
    set_pruning(exp_dir, {**pruning, "targets": [0.8, 0.6], "hold_steps": 100})
    (exp_dir / "latest.pth").write_bytes(b"")
    sizes = ("target0.80", "target0.60")
    if task == "slu":  # what slu.sh's stage 13 leaves in each size's experiment for local/results.sh
        for size in sizes:
            scores = recipe / f"{exp}_pruned" / size / "decode_slu" / "test" / "score_intent"
            scores.mkdir(parents=True)
            (scores / "result.txt").write_text("intent accuracy: 50.00 % (1 / 2)\n")
    result, calls = run_recipe("--stage", "12", f"--{task}_config", config)
    assert result.returncode == 0, result.stderr
    export, *decodes, results = calls
    assert (option(export, "model_file"), option(export, "output_dir")) == (f"{exp}/latest.pth", f"{exp}_pruned")
    assert len(decodes) == len(sizes)
    for call, size in zip(decodes, sizes):
        assert call[0] == f"{task}.sh"
        assert option(call, f"{task}_exp") == f"{exp}_pruned/{size}"
        assert option(call, f"inference_{task}_model") == "latest.pth"
        assert option(call, "inference_config") == inference_config
    assert results == ["python", "-m", "espnet_prune.bin.size_results", f"{exp}_pruned"]
    if task == "slu":
        for size in sizes:
            assert "|decode_slu/test|2|1|50.00|" in (recipe / f"{exp}_pruned" / size / "RESULTS.md").read_text()
