"""``espnet_prune.bin.export``: the compact model as a standalone ESPnet experiment directory.

The gated model starts from a pretrained SSL checkpoint named in its config; after export that
checkpoint is hidden (renamed), and the exported directory must still decode, with ESPnet's
``asr_inference`` / ``slu_inference``, ``Speech2Text``, and after ``espnet2.bin.pack`` /
unpacking (``Speech2Text.from_pretrained`` included), exactly what the gated model decodes.
"""

import contextlib
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_prune import register
from espnet_prune.bin import export as export_cli
from espnet_prune.export import experiment
from espnet_prune.export.compact import task_class
from espnet_prune.export.report import ExportReport
from espnet_prune.ssl.config import get_config
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.utils.output_dir import OWNER_FILE
from test.espnet_prune.asr.recipe_steps import TINY_ARCH, decode, launch, token_args, training_config, write_config

PRUNING = {"units": ["conv", "head", "interm"], "metric": "macs", "target": 0.7, "reference_seconds": 1}
CHECKPOINT = "pretrained/tiny_wav2vec2.pth"  # relative to the work directory, as in a recipe
STATS = "exp/asr_stats/train/feats_stats.npz"
MODEL = "valid.acc.ave.pth"


def gated_experiment(task: str, work: Path, data: Dict[str, Path]) -> Path:
    """What stage 11 leaves: EXP/config.yaml written by ESPnet's ``<task>_train`` (a dry run
    through the launcher) naming a pretrained checkpoint and global MVN statistics, and
    EXP/valid.acc.ave.pth whose gates close some CNN channels, heads and FFN units."""
    register()
    encoder = SSLEncoder(get_config(TINY_ARCH))
    (work / CHECKPOINT).parent.mkdir(parents=True)
    torch.save(encoder.state_dict(), work / CHECKPOINT)
    rng = np.random.default_rng(0)
    dim = TINY_ARCH["embed_dim"]
    (work / STATS).parent.mkdir(parents=True)
    np.savez(work / STATS, count=np.array(1000.0), sum=rng.normal(size=dim) * 10,
             sum_square=1000.0 + rng.uniform(size=dim) * 100)
    config = training_config(PRUNING, normalize="global_mvn", normalize_conf={"stats_file": STATS})
    config["frontend_conf"]["checkpoint"] = CHECKPOINT
    config_file = write_config(work / "conf" / f"train_{task}.yaml", config)
    exp = work / "exp" / f"{task}_pruned"
    launch(["-m", f"espnet2.bin.{task}_train", "--dry_run", "true",
            *token_args(data["token_list"], data.get("nlsyms")), "--config", config_file.relative_to(work),
            "--output_dir", exp.relative_to(work), "--frontend_conf", "fs=16k"], work, work / f"{task}_dry_run.log")
    torch.manual_seed(0)  # the gates' initial noise: the same gated model whatever ran (or was imported) before
    with contextlib.chdir(work):  # the config's paths are relative to the work directory
        model, _ = task_class(task).build_model_from_file(str(exp / "config.yaml"), None, "cpu")
    gates = model.frontend.controller.gates
    with torch.no_grad():  # as if training had closed them
        gates["conv"][1].log_alpha[:8] = -20.0
        gates["head"]["0"].log_alpha[:2] = -20.0
        gates["interm"]["1"].log_alpha[:40] = -20.0
    torch.save(model.state_dict(), exp / MODEL)
    (exp / "images").mkdir()
    (exp / "images" / "loss.png").write_bytes(b"curve")
    return exp


def hide_checkpoint(work: Path) -> None:
    (work / CHECKPOINT).rename(work / CHECKPOINT.replace(".pth", ".hidden"))


@pytest.fixture(scope="module")
def asr_export(tmp_path_factory, asr_corpus):
    work = tmp_path_factory.mktemp("export_asr")
    exp = gated_experiment("asr", work, asr_corpus)
    compact = work / "exp" / "asr_pruned_compact"
    subprocess.run([sys.executable, "-m", "espnet_prune.bin.export", "--train_config", "exp/asr_pruned/config.yaml",
                    "--model_file", f"exp/asr_pruned/{MODEL}", "--output_dir", "exp/asr_pruned_compact"],
                   check=True, cwd=work, capture_output=True)
    single = exp / "valid.acc.ave.pruned.pth"
    with contextlib.chdir(work):
        export_cli.main(["--train_config", str(exp / "config.yaml"), "--model_file", str(exp / MODEL),
                         "--output", str(single)])
    valid = asr_corpus["valid"]
    gated = decode("asr", work, valid, exp / "config.yaml", exp / MODEL, work / "decode_gated")
    single_decoded = decode("asr", work, valid, exp / "config.yaml", single, work / "decode_single")
    hide_checkpoint(work)
    return {"work": work, "exp": exp, "compact": compact, "valid": valid, "gated": gated,
            "single": single, "single_decoded": single_decoded}


def first_utterance(data_dir: Path):
    key, path = (data_dir / "wav.scp").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)
    waveform, _ = soundfile.read(path, dtype="float32")
    return key, waveform


@pytest.mark.slow
def test_directory_holds_the_config_the_model_and_the_report(asr_export):
    compact = asr_export["compact"]
    assert sorted(p.name for p in compact.iterdir()) == [
        OWNER_FILE, "config.yaml", "images", "valid.acc.ave.json", MODEL]
    assert (compact / "images" / "loss.png").read_bytes() == b"curve"
    report = json.loads((compact / "valid.acc.ave.json").read_text(encoding="utf-8"))
    assert report["task"] == "asr"
    assert report["output_dir"] == "exp/asr_pruned_compact"
    assert report["files"] == {"normalize_conf.stats_file": STATS}
    assert report["max_abs_diff_gated_vs_compact"] < 1e-4
    assert report["max_abs_diff_gated_vs_exported"] < 1e-4
    after = report["structure"]["after"]
    # 32 - 8 channels, 4 - 2 heads, 96 - 40 FFN units (or one fewer: 56 open gates at p = 0.99)
    assert after["conv_layers"][1][0] == 24 and after["num_heads"][0] == 2 and after["ffn_dims"][1] in (55, 56)
    assert report["encoder"]["ratio"]["macs"]["total"] < 1.0


@pytest.mark.slow
def test_config_names_no_pretrained_weights(asr_export):
    text = (asr_export["compact"] / "config.yaml").read_text(encoding="utf-8")
    assert "tiny_wav2vec2" not in text and "pruning" not in text
    config = yaml.safe_load(text)
    report = json.loads((asr_export["compact"] / "valid.acc.ave.json").read_text(encoding="utf-8"))
    assert config["frontend_conf"] == {"arch": report["structure"]["after"], "checkpoint": None, "fs": "16k"}
    assert config["init_param"] == [] and config["output_dir"] == "exp/asr_pruned_compact"
    gated = yaml.safe_load((asr_export["exp"] / "config.yaml").read_text(encoding="utf-8"))
    for key in ("token_list", "normalize", "normalize_conf", "encoder_conf", "decoder_conf", "model_conf"):
        assert config[key] == gated[key], key


@pytest.mark.slow
def test_the_gated_config_needs_the_hidden_checkpoint(asr_export):
    """What the directory replaces: the training config cannot build the model any more."""
    from espnet2.tasks.asr import ASRTask

    with contextlib.chdir(asr_export["work"]), pytest.raises(FileNotFoundError, match="tiny_wav2vec2"):
        ASRTask.build_model_from_file(str(asr_export["exp"] / "config.yaml"), str(asr_export["single"]), "cpu")


@pytest.mark.slow
def test_output_still_writes_a_model_file_for_the_training_config(asr_export):
    report = json.loads(asr_export["single"].with_suffix(".json").read_text(encoding="utf-8"))
    assert report["output"] == str(asr_export["single"])
    assert asr_export["single_decoded"] == asr_export["gated"]


@pytest.mark.slow
def test_asr_inference_decodes_the_directory_without_the_original_weights(asr_export):
    work, compact = asr_export["work"], asr_export["compact"]
    decoded = decode("asr", work, asr_export["valid"], compact / "config.yaml", compact / MODEL,
                     work / "decode_compact")
    assert len(decoded) == 4 and decoded == asr_export["gated"]


@pytest.mark.slow
def test_speech2text_decodes_the_directory(asr_export):
    from espnet2.bin.asr_inference import Speech2Text

    compact = asr_export["compact"]
    key, waveform = first_utterance(asr_export["valid"])
    with contextlib.chdir(asr_export["work"]):
        speech2text = Speech2Text(asr_train_config=str(compact / "config.yaml"),
                                  asr_model_file=str(compact / MODEL), beam_size=2)
    assert speech2text.asr_model.frontend.encoder.config.num_heads[0] == 2
    assert speech2text(waveform)[0][0] == asr_export["gated"][key]


@pytest.mark.slow
def test_packed_directory_decodes_after_unpacking_elsewhere(asr_export, tmp_path, monkeypatch):
    """asr.sh's packing stage (``espnet2.bin.pack asr`` with the statistics as an option),
    then decoding from another working directory, with asr_inference and from_pretrained."""
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.main_funcs.pack_funcs import unpack
    from espnet_model_zoo import downloader

    work, valid = asr_export["work"], asr_export["valid"]
    report = json.loads((asr_export["compact"] / "valid.acc.ave.json").read_text(encoding="utf-8"))
    with contextlib.chdir(work):  # the report's paths are relative to where export ran
        command = experiment.pack_command(ExportReport.from_json(report))
    assert command[6:10] == ["--asr_model_file", f"exp/asr_pruned_compact/{MODEL}", "--option", STATS]
    assert command[:4] == ["python", "-m", "espnet2.bin.pack", "asr"]
    packed = work / command[-1]
    assert packed.name == "asr_pruned_compact_valid.acc.ave.zip"
    assert command[-4:-2] == ["--option", "exp/asr_pruned_compact/images"]
    launch(command[1:], work, work / "pack.log")

    elsewhere = tmp_path / "elsewhere"
    files = unpack(packed, elsewhere / "model")
    unpacked_text = Path(files["asr_train_config"]).read_text(encoding="utf-8")
    assert str(work) not in unpacked_text
    unpacked_config = yaml.safe_load(unpacked_text)
    assert unpacked_config["normalize_conf"]["stats_file"] == str(elsewhere / "model" / STATS)
    decoded = decode("asr", elsewhere, valid, files["asr_train_config"], files["asr_model_file"],
                     elsewhere / "decode")
    assert decoded == asr_export["gated"]

    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(downloader, "ModelDownloader",
                        functools.partial(downloader.ModelDownloader, cachedir=tmp_path / "cache"))
    key, waveform = first_utterance(valid)
    speech2text = Speech2Text.from_pretrained(str(packed), beam_size=2)
    assert speech2text(waveform)[0][0] == asr_export["gated"][key]


@pytest.mark.slow
def test_slu_directory_decodes_without_the_original_weights(tmp_path, slu_corpus):
    work = tmp_path
    exp = gated_experiment("slu", work, slu_corpus)
    compact = work / "exp" / "slu_pruned_compact"
    valid = slu_corpus["valid"]
    gated = decode("slu", work, valid, exp / "config.yaml", exp / MODEL, work / "decode_gated")
    with contextlib.chdir(work):
        report = experiment.export_experiment(exp / "config.yaml", exp / MODEL, compact).reports[0].to_json()
    assert report["task"] == "slu"
    assert report["files"] == {"non_linguistic_symbols": str(slu_corpus["nlsyms"]),
                               "normalize_conf.stats_file": STATS}
    hide_checkpoint(work)
    decoded = decode("slu", work, valid, compact / "config.yaml", compact / MODEL, work / "decode_compact")
    assert len(decoded) == 4 and decoded == gated


def test_output_or_output_dir_is_required(capsys):
    base = ["--train_config", "c.yaml", "--model_file", "m.pth"]
    with pytest.raises(SystemExit):
        export_cli.get_parser().parse_args(base)
    assert "one of the arguments --output_dir --output is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_cli.get_parser().parse_args([*base, "--output", "a.pth", "--output_dir", "d"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_output_dir_must_not_overwrite_the_training_experiment(tmp_path):
    (tmp_path / "config.yaml").write_text("frontend: pruned_ssl\n")
    (tmp_path / MODEL).write_bytes(b"")
    with pytest.raises(ValueError, match="would overwrite"):
        experiment.export_experiment(tmp_path / "config.yaml", tmp_path / MODEL, tmp_path)


def test_standalone_config_refuses_other_frontends_and_keeps_other_keys():
    with pytest.raises(ValueError, match="not pruned_ssl"):
        experiment.standalone_config({"frontend": "s3prl"}, {}, Path("d"))
    config = {"frontend": "pruned_ssl", "bpemodel": "data/bpe.model", "init_param": ["a.pth:encoder"],
              "frontend_conf": {"checkpoint": "w.pt", "arch": "wav2vec2_base", "layer": 3, "pruning": {"target": 0.5}}}
    new = experiment.standalone_config(config, {"embed_dim": 8}, Path("d"))
    assert new["frontend_conf"] == {"arch": {"embed_dim": 8}, "checkpoint": None, "layer": 3}
    assert new["init_param"] == [] and new["bpemodel"] == "data/bpe.model"
    assert config["frontend_conf"]["checkpoint"] == "w.pt"  # the input is left alone
    assert experiment.decoding_files({**new, "token_list": ["a"], "non_linguistic_symbols": "none"}) == {
        "bpemodel": "data/bpe.model"}
