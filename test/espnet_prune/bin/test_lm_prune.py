"""``python -m espnet_prune.bin.lm_prune``: end to end with ESPnet's tools, and input checks."""

import json
import math
import re
import subprocess
import sys

import pytest
import yaml

from espnet_prune.bin.lm_prune import main, target_name
from test.espnet_prune.lm.tiny_lm import one_torch_thread, subprocess_env, tiny_lm  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lm_prune_args(experiment, output_dir, **options):
    args = dict(
        lm_train_config=experiment.config,
        lm_file=experiment.model_file,
        train_text=experiment.train_text,
        valid_text=experiment.valid_text,
        output_dir=output_dir,
        stat_batches=4,
        stat_batch_size=16,
        latency_steps=8,
        latency_repeats=2,
    )
    args.update(options)
    return [f"--{key}={value}" for key, value in args.items()]


@pytest.mark.slow  # end to end: lm_prune with four ESPnet fine-tuning runs, then lm_calc_perplexity
def test_incremental_lowrank_cli_emits_every_size_for_espnet_tools(tiny_lm, tmp_path):  # noqa: F811
    output_dir = tmp_path / "pruned"
    cmd = [sys.executable, "-m", "espnet_prune.bin.lm_prune"] + lm_prune_args(
        tiny_lm, output_dir,
        criterion="data", method="lowrank", scheduler="incremental", targets="0.6,0.3",
        num_increments=2, finetune_steps=4, finetune_lr=0.001, finetune_batch_size=16,
    )
    result = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((output_dir / "report.json").read_text())
    systems = {s["name"]: s for s in report["systems"]}
    assert list(systems) == ["dense", "target0.60", "target0.30"]
    for name, target in (("target0.60", 0.6), ("target0.30", 0.3)):
        system = systems[name]
        assert (output_dir / name / "config.yaml").is_file() and (output_dir / name / "model.pth").is_file()
        assert abs(system["params"] - target * report["dense_params"]) <= 0.02 * target * report["dense_params"]
        assert system["lm_conf"]["ranks"]
        assert math.isfinite(system["perplexity"]) and system["perplexity"] > 1
        assert system["latency_ms_per_step"] > 0
        assert system["latency_ratio"] == pytest.approx(
            system["latency_ms_per_step"] / systems["dense"]["latency_ms_per_step"]
        )
    # The smaller size continued from the larger one: four steps, each fine-tuned by ESPnet.
    steps = sorted(p.name for p in (output_dir / "finetune").glob("step*"))
    assert steps == ["step01_ratio0.8000", "step02_ratio0.6000", "step03_ratio0.4500", "step04_ratio0.3000"]
    assert all((output_dir / "finetune" / s / "train" / "1epoch.pth").is_file() for s in steps)
    table = (output_dir / "report.md").read_text()
    assert "| target0.30 | 0.30 |" in table and "| dense | 1.00 |" in table

    # ESPnet's perplexity tool loads the emitted size through the plugin launcher.
    ppl_dir = tmp_path / "ppl"
    cmd = [
        sys.executable, "-m", "espnet_prune", "-m", "espnet2.bin.lm_calc_perplexity",
        "--train_config", str(output_dir / "target0.30" / "config.yaml"),
        "--model_file", str(output_dir / "target0.30" / "model.pth"),
        "--data_path_and_name_and_type", f"{tiny_lm.valid_text},text,text",
        "--output_dir", str(ppl_dir), "--num_workers", "0",
    ]
    result = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    ppl = float((ppl_dir / "ppl").read_text())
    assert math.isfinite(ppl)
    assert ppl == pytest.approx(systems["target0.30"]["perplexity"], rel=1e-5)


def test_oneshot_structured_without_finetuning(tiny_lm, tmp_path):  # noqa: F811
    output_dir = tmp_path / "structured"
    main(lm_prune_args(
        tiny_lm, output_dir, criterion="magnitude", method="structured", scheduler="oneshot",
        targets="0.5,0.7", finetune_steps=0,
    ))
    report = json.loads((output_dir / "report.json").read_text())
    assert [s["name"] for s in report["systems"]] == ["dense", "target0.70", "target0.50"]
    assert not (output_dir / "finetune").exists()
    config = yaml.safe_load((output_dir / "target0.50" / "config.yaml").read_text())
    assert config["lm"] == "pruned_transformer"
    assert config["lm_conf"] == report["systems"][2]["lm_conf"]
    assert not config["lm_conf"]["ranks"] and not config["lm_conf"]["weight_masks"]
    for system, target in zip(report["systems"][1:], (0.7, 0.5)):
        assert abs(system["params"] - target * report["dense_params"]) <= 0.02 * target * report["dense_params"]


def test_target_directory_names():
    assert target_name(0.5) == "target0.50"
    assert target_name(0.75) == "target0.75"
    assert target_name(0.125) == "target0.125"


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        (dict(targets="1.0"), "target 1.0 must be a ratio"),
        (dict(targets="0.5,1.5"), "target 1.5 must be a ratio"),
        (dict(targets="0"), "target 0 must be a ratio"),
        (dict(targets="-0.25"), "target -0.25 must be a ratio"),
        (dict(targets="0.5,0.5"), "target 0.5 is given twice"),
        (dict(targets="half"), "target 'half' is not a number"),
        (dict(method="pruneall"), "invalid choice: 'pruneall'"),
        (dict(criterion="fisher"), "invalid choice: 'fisher'"),
        (dict(scheduler="cyclic"), "invalid choice: 'cyclic'"),
        (dict(lm="seq_rnn"), "unsupported LM type 'lm: seq_rnn'"),
        (dict(train_text=""), "train_text: .* is empty"),
        (dict(valid_text="key_only\n"), "valid_text: .* is empty"),
        (dict(lm_file="missing"), "lm_file: no such file"),
        (dict(valid_text="k1 123\nk2 ab 45\n"), r"valid_text: 62\.5 % of the tokens .*\(5 of 8.*--max_unk_rate 0\.05"),
        (dict(max_unk_rate="1.5"), "1.5 is not in"),
        (dict(method="structured", targets="0.02"), "below what structured pruning can reach"),
    ],
)
def test_bad_input_is_refused_before_any_work(tiny_lm, tmp_path, capsys, case, message):  # noqa: F811
    case = dict(case)
    options = dict(targets="0.5", method="lowrank")
    if "lm" in case:
        config = yaml.safe_load(tiny_lm.config.read_text())
        config["lm"] = case.pop("lm")
        options["lm_train_config"] = _write(tmp_path / "config.yaml", yaml.safe_dump(config))
    for key in ("train_text", "valid_text"):
        if key in case:
            options[key] = _write(tmp_path / f"{key}.txt", case.pop(key))
    if case.get("lm_file") == "missing":
        options["lm_file"] = tmp_path / case.pop("lm_file")
    options.update(case)
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(lm_prune_args(tiny_lm, output_dir, **options))
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not output_dir.exists()


def _not_this_lm(kind, experiment, path):
    import torch

    from espnet_prune.ssl.model import SSLEncoder
    from test.espnet_prune.ssl.tiny import tiny_config

    if kind == "text":
        path.write_text("this is a text file\n", encoding="utf-8")
    elif kind == "state_dict_of_another_model":
        torch.save(SSLEncoder(tiny_config()).state_dict(), path)
    elif kind == "other_shapes":
        state = torch.load(experiment.model_file, map_location="cpu")
        key = sorted(state)[0]
        state[key] = torch.zeros(3, 5)
        torch.save(state, path)
    else:
        torch.save([1, 2, 3], path)


@pytest.mark.parametrize("kind, message", [
    ("text", r"cannot read PATH as a PyTorch model file \(UnpicklingError: [^)]+\); expected the model\.pth or "
             r"\*\.ave\.pth of an ESPnet LM experiment$"),
    ("state_dict_of_another_model",
     r"PATH is not a model file of the LM that \S+ describes: (\d+) of the LM's \1 parameters are missing "
     r"\(\['lm\.[^']+', '[^']+', '[^']+', \.\.\. and \d+ more\]\); \d+ keys are not the LM's \(\['encoder\.[^]]+\]\); "
     r"expected ESPnetLanguageModel keys such as \['lm\.[^]]+\]$"),
    ("other_shapes", r"PATH does not fit the LM that \S+ describes \(lm_conf, token_list\): the shapes of 1 of its "
                     r"parameters differ \(\['lm\.\S+: file \(3, 5\) vs config \(\d+,?\)'\]\)$"),
    ("list", r"PATH holds a list, not a state dict of tensors"),
])
def test_lm_file_that_is_not_this_lm_is_named_in_one_line(tiny_lm, tmp_path, capsys, kind, message):  # noqa: F811
    path = tmp_path / "not_an_lm.pth"
    _not_this_lm(kind, tiny_lm, path)
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(lm_prune_args(tiny_lm, output_dir, lm_file=path, targets="0.5", method="lowrank"))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # argparse's one line, after the usage
    assert re.search(": error: lm_file: " + message.replace("PATH", re.escape(str(path))), error), error
    assert not output_dir.exists()


def test_method_that_does_not_apply_to_the_input_lm_is_refused(tiny_lm, tmp_path, capsys):  # noqa: F811
    from espnet_prune.lm.experiment import load_lm_experiment, save_lm_experiment
    from espnet_prune.lm.methods import prune_step

    model, _, config = load_lm_experiment(str(tiny_lm.config), str(tiny_lm.model_file))
    masked = prune_step(model, "unstructured", "magnitude", model.lm.num_params() // 2, None)
    config_path, model_path = save_lm_experiment(masked, config, tmp_path / "masked")
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(lm_prune_args(
            tiny_lm, output_dir, lm_train_config=config_path, lm_file=model_path,
            method="lowrank", targets="0.5",
        ))
    assert exit_info.value.code == 2
    assert "lowrank pruning does not apply to an LM with weight masks" in capsys.readouterr().err
    assert not output_dir.exists()


def test_unknown_token_rate_is_measured_with_the_lms_own_tokenisation(tiny_lm, tmp_path):  # noqa: F811
    import argparse

    from espnet_prune.bin.lm_prune import check_unknown_tokens
    from espnet_prune.lm.data import unknown_token_rate
    from espnet_prune.lm.experiment import load_lm_experiment

    _, train_args, _ = load_lm_experiment(str(tiny_lm.config), str(tiny_lm.model_file))
    # "ab 1" -> a, b, <space>, 1 (unknown); "é" -> unknown: 2 of 5 tokens.
    text = _write(tmp_path / "text", "k1 ab 1\nk2 é\n")
    assert unknown_token_rate(train_args, str(text)) == (2, 5)
    assert unknown_token_rate(train_args, str(tiny_lm.valid_text))[0] == 0
    args = argparse.Namespace(train_text=str(tiny_lm.train_text), valid_text=str(text), max_unk_rate=0.5)
    assert check_unknown_tokens(args, train_args) == {"train_text": 0.0, "valid_text": 0.4}
    args.max_unk_rate = 0.3
    with pytest.raises(ValueError, match=r"valid_text: 40\.0 % .*--max_unk_rate 0\.3"):
        check_unknown_tokens(args, train_args)


def test_output_dir_of_another_experiment_is_refused_byte_for_byte(tiny_lm, tmp_path, capsys):  # noqa: F811
    from test.espnet_prune.utils.test_output_dir import espnet_experiment, snapshot

    other = espnet_experiment(tmp_path / "lm_other")
    before = snapshot(other)
    with pytest.raises(SystemExit) as exit_info:
        main(lm_prune_args(tiny_lm, other, targets="0.5", finetune_steps=0))
    assert exit_info.value.code == 2
    assert f"refusing to write into {other}" in capsys.readouterr().err
    assert snapshot(other) == before


def test_a_non_finite_lm_is_refused_naming_the_tensor(tiny_lm, tmp_path, capsys):  # noqa: F811
    import torch

    state = torch.load(tiny_lm.model_file)
    name = next(key for key, value in state.items() if value.is_floating_point() and value.dim() == 2)
    state[name][0, 0] = float("inf")
    torch.save(state, tmp_path / "inf.pth")
    with pytest.raises(SystemExit) as exit_info:
        main(lm_prune_args(tiny_lm, tmp_path / "out", lm_file=tmp_path / "inf.pth", targets="0.5", finetune_steps=0))
    assert exit_info.value.code == 2
    assert f"tensor '{name}' has 1 non-finite" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
