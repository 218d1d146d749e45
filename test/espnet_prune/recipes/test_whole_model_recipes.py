"""The recipes' whole-model configs (doc/whole_model.md): SLURP prunes its decoder with the
frontend, LibriSpeech's Conformer config the whole model; ESPnet builds them, their budget covers
the parts they say, and one training step runs with the pruning loss."""

from pathlib import Path

import pytest
import torch
import yaml

from test.espnet_prune.recipes.test_recipe_configs import EGS2, TOKENS, espnet_tasks, small_arch  # noqa: F401

CONFIGS = {
    "slu": (EGS2 / "slurp" / "slu1" / "conf" / "train_slu_wav2vec2_whole.yaml", ["frontend", "decoder", "ctc"]),
    "asr": (EGS2 / "librispeech_100" / "asr1" / "conf" / "train_asr_wav2vec2_conformer.yaml",
            ["frontend", "encoder", "decoder", "ctc"]),
}


@pytest.mark.parametrize("task", CONFIGS)
def test_whole_model_config_builds_and_trains_a_step(task, espnet_tasks, tmp_path):  # noqa: F811
    tasks, _ = espnet_tasks
    path, parts = CONFIGS[task]
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert "pruning" not in config["frontend_conf"]
    config["frontend_conf"]["arch"] = small_arch(config["frontend_conf"]["arch"])
    del config["frontend_conf"]["checkpoint"]
    if task == "asr":  # 2 blocks, 1 decoder layer: the same keys, a smaller model
        config["encoder_conf"].update(num_blocks=2, linear_units=64, cnn_module_kernel=3)
        config["decoder_conf"].update(num_blocks=1, linear_units=64)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "tokens.txt").write_text("".join(token + "\n" for token in TOKENS))
    args = tasks[task].get_parser().parse_args(["--config", str(tmp_path / "train.yaml"), "--token_list",
                                                str(tmp_path / "tokens.txt"), "--output_dir", str(tmp_path)])
    torch.manual_seed(0)
    model = tasks[task].build_model(args)
    controller = model.controller
    assert [part.name for part in controller.part.parts] == parts
    assert controller.budgets == {"total": 0.6} and model.frontend.controller is None
    (optimizer,) = tasks[task].build_optimizers(args, model)
    loss, stats, _ = model(torch.randn(2, 4000), torch.tensor([4000, 3200]), torch.tensor([[2, 3, 5], [8, 10, -1]]),
                           torch.tensor([3, 2]))
    assert torch.isfinite(loss).all() and "loss_prune" in stats
    loss.sum().backward()
    optimizer.step()
    assert int(controller.step) == 1


def test_the_decode_config_is_what_the_conformer_budget_is_priced_for():
    path, _ = CONFIGS["asr"]
    decoding = yaml.safe_load(path.read_text(encoding="utf-8"))["model_conf"]["pruning"]["decoding"]
    decode = yaml.safe_load((Path(path).parent / "decode_asr_attention.yaml").read_text(encoding="utf-8"))
    assert (decoding["beam_size"], decoding["ctc_weight"]) == (decode["beam_size"], decode["ctc_weight"])


@pytest.mark.parametrize("task", CONFIGS)
def test_the_decode_latency_of_a_recipe_config_is_profiled_with_its_task_decoder(task, tmp_path):
    """``profile_decode_latency`` on the recipe's training YAML and token list (as asr.sh / slu.sh
    pass them): the structures decode with Speech2Text / Speech2Understand and the table is priced
    for the config's decoding and duration."""
    from espnet_prune.bin import profile_decode_latency
    from espnet_prune.pruning import decode_latency

    path, parts = CONFIGS[task]
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["frontend_conf"]["arch"] = small_arch(config["frontend_conf"]["arch"])
    del config["frontend_conf"]["checkpoint"]
    if task == "asr":
        config["encoder_conf"].update(num_blocks=2, linear_units=64, cnn_module_kernel=3)
        config["decoder_conf"].update(num_blocks=1, linear_units=64)
    config["model_conf"]["pruning"].update(reference_seconds=1.0, metric="latency",
                                           latency_table=str(tmp_path / "not_yet.json"))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "tokens.txt").write_text("".join(token + "\n" for token in TOKENS))
    table_file = tmp_path / "table.json"
    profile_decode_latency.main(["--config", str(tmp_path / "train.yaml"), "--token_list", str(tmp_path / "tokens.txt"),
                                 "--task", task, "--rounds", "1", "--warmup", "0", "--points", "1", "0",
                                 "--output", str(table_file)])
    table = decode_latency.load_table(table_file)
    pruning = config["model_conf"]["pruning"]
    assert table["reference_seconds"] == 1.0
    assert table["decoding"]["beam_size"] == pruning["decoding"]["beam_size"]
    # SLURP's ESPnet transformer encoder is not prunable: its time is in the fixed rest
    assert set(table["fit"]) == {part for part in ("frontend", "encoder", "decoder") if part in parts}
    assert len(table["points"]) == 2 and table["points"][1]["gmacs"]["frontend"] < table["points"][0]["gmacs"][
        "frontend"]
