"""``espnet_prune.bin.convert``: an ESPnet model with ESPnet's own ``s3prl`` frontend becomes a
``pruned_ssl`` / ``pruned_espnet`` experiment that decodes what the original decodes, fine-tunes
with a MAC budget through ESPnet's trainer and exports to that budget; bad input is named.

The originals are ESPnet models with ``frontend: s3prl`` around tiny ``wav2vec2_local`` /
``hubert_local`` / ``wavlm_local`` checkpoints (s3prl builds them from the files the conftest
writes); their features come from s3prl's ``S3PRLUpstream`` and ``Featurizer``, the converted
ones from our encoder.
"""

import argparse
import contextlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_prune import register
from espnet_prune.asr.frontend.from_s3prl import CHECKPOINT_UPSTREAMS, UPSTREAM_ARCHS, s3prl_encoder_config
from espnet_prune.bin import convert as convert_cli
from espnet_prune.bin import export as export_cli
from espnet_prune.export import compact as export_compact
from espnet_prune.pruning.reports import BUDGET_TOLERANCE, RUN_LENGTH_PER_WARMUP
from espnet_prune.ssl.config import get_config
from test.espnet_prune.asr.recipe_steps import NO_PLOTS, collect_stats, train, training_config, write_config
from test.espnet_prune.conftest import CheckpointWriter, make_batch, small_config

FEATURE_TOLERANCE = 1e-4
LOCAL_UPSTREAM = {"wav2vec2": "wav2vec2_local", "hubert": "hubert_local", "wavlm": "wavlm_local"}


def s3prl_frontend_conf(path: Path, model_type: str, layer: int = -1, multilayer: bool = False,
                        normalize: bool = False) -> Dict:
    """``frontend_conf`` of ESPnet's s3prl frontend around the local checkpoint ``path``."""
    return {"frontend_conf": {"upstream": LOCAL_UPSTREAM[model_type], "path_or_url": str(path),
                              "normalize": normalize},
            "multilayer_feature": multilayer, "layer": layer, "fs": "16k"}


def s3prl_config(frontend_conf: Dict, **overrides) -> Dict:
    """The tiny recipe config of the end-to-end tests with ESPnet's s3prl frontend and model."""
    config = training_config(None, model="espnet", **overrides)
    config.update(frontend="s3prl", frontend_conf=frontend_conf)
    return config


def task_class(task: str):
    register()
    return export_compact.task_class(task)


def build_experiment(directory: Path, config: Dict, task: str = "asr", seed: int = 0) -> Tuple[Path, Path]:
    """An ESPnet experiment as training writes it (every argument in config.yaml, a state dict),
    with a model built in this process; the featurizer's weights are random so that layer
    weighting shows."""
    cls = task_class(task)
    args = {**vars(cls.get_parser().parse_args([])), **config}
    args["token_list"] = ["<blank>", "<unk>", "a", "b", "c", "<space>", "<sos/eos>"]
    torch.manual_seed(seed)
    model = cls.build_model(argparse.Namespace(**args))
    if hasattr(model.frontend.featurizer, "weights"):
        with torch.no_grad():
            model.frontend.featurizer.weights.normal_()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(args), encoding="utf-8")
    torch.save(model.state_dict(), directory / "model.pth")
    return directory / "config.yaml", directory / "model.pth"


def load(task: str, config: Path, model_file: Path):
    model, _ = task_class(task).build_model_from_file(str(config), str(model_file), "cpu")
    return model.eval()


def frontend_difference(original, converted, waveforms: List[torch.Tensor]) -> float:
    """Largest difference of the two models' frontend features, one utterance at a time (as
    ``Speech2Text`` runs them); frame counts must agree."""
    worst = 0.0
    with torch.no_grad():
        for waveform in waveforms:
            lengths = torch.tensor([waveform.shape[0]])
            expected, expected_lengths = original.frontend(waveform[None], lengths)
            actual, actual_lengths = converted.frontend(waveform[None], lengths)
            assert torch.equal(expected_lengths, actual_lengths) and expected.shape == actual.shape
            worst = max(worst, float((expected - actual).abs().max()))
    return worst


def run_convert(*args) -> None:
    convert_cli.main([str(arg) for arg in args])


def convert_error(capsys, *args) -> str:
    """The one line ``main()`` exits with."""
    with pytest.raises(SystemExit) as exit_info:
        run_convert(*args)
    message = str(exit_info.value.code)
    assert message.startswith("convert: ") and "\n" not in message and "Traceback" not in message, message
    return message


# ---------------------------------------------------------------------------------------------
# The same features, in this process (every upstream family, each way of choosing the output)
# ---------------------------------------------------------------------------------------------

VARIANTS = {
    "wav2vec2_multilayer": ("wav2vec2", False, dict(multilayer=True)),
    "wav2vec2_last": ("wav2vec2", False, dict()),
    "wav2vec2_large_layer0_normalize": ("wav2vec2", True, dict(layer=0, normalize=True)),
    "hubert_large_layer1_normalize": ("hubert", True, dict(layer=1, normalize=True)),
    "hubert_large_last_layer": ("hubert", True, dict(layer=2)),
    "wavlm_multilayer_normalize": ("wavlm", False, dict(multilayer=True, normalize=True)),
    "wavlm_large_multilayer": ("wavlm", True, dict(multilayer=True)),
}
#: Utterances of 0.5 s down to 24 ms: shorter than s3prl's 0.05 s and the CNN's receptive field too.
LENGTHS = (8000, 6421, 4730, 700, 390)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_frontend_computes_the_s3prl_frontends_features(variant, tmp_path):
    model_type, large, options = VARIANTS[variant]
    path, _ = CheckpointWriter(tmp_path).s3prl(small_config(model_type, large, normalize_waveform=large))
    config, model_file = build_experiment(tmp_path / "exp", s3prl_config(s3prl_frontend_conf(path, model_type,
                                                                                             **options)))
    run_convert("--asr_train_config", config, "--asr_model_file", model_file, "--output_dir", tmp_path / "converted")
    converted_config = yaml.safe_load((tmp_path / "converted" / "config.yaml").read_text(encoding="utf-8"))
    assert converted_config["frontend"] == "pruned_ssl" and converted_config["model"] == "pruned_espnet"
    frontend_conf = converted_config["frontend_conf"]
    assert frontend_conf["checkpoint"] is None and frontend_conf["s3prl_lengths"] is True
    assert frontend_conf["layer"] == options.get("layer", -1)
    assert frontend_conf["multilayer_feature"] == options.get("multilayer", False)
    assert frontend_conf["normalize_hidden_states"] == options.get("normalize", False)
    original = load("asr", config, model_file)
    converted = load("asr", tmp_path / "converted" / "config.yaml", tmp_path / "converted" / "model.pth")
    waveforms, lengths = make_batch(LENGTHS)
    utterances = [w[:n] for w, n in zip(waveforms, lengths.tolist())]
    difference = frontend_difference(original, converted, utterances)
    assert difference <= FEATURE_TOLERANCE, difference
    # Everything but the frontend is the same tensors under the same names.
    original_state, converted_state = original.state_dict(), converted.state_dict()
    rest = {k for k in original_state if not k.startswith("frontend.")}
    assert rest == {k for k in converted_state if not k.startswith("frontend.")}
    assert all(torch.equal(original_state[k], converted_state[k]) for k in rest)


def test_pruning_option_adds_a_preset_or_a_yaml_file(tmp_path):
    path, _ = CheckpointWriter(tmp_path).s3prl(small_config())
    config, model_file = build_experiment(tmp_path / "exp", s3prl_config(s3prl_frontend_conf(path, "wav2vec2")))
    run_convert("--asr_train_config", config, "--asr_model_file", model_file, "--output_dir", tmp_path / "preset",
                "--pruning", "hj_macs0.6")
    written = yaml.safe_load((tmp_path / "preset" / "config.yaml").read_text(encoding="utf-8"))
    assert written["frontend_conf"]["pruning"] == {"preset": "hj_macs0.6"}
    section = {"units": ["conv", "head"], "metric": "macs", "target": 0.7, "warmup_steps": 10}
    (tmp_path / "pruning.yaml").write_text(yaml.safe_dump(section), encoding="utf-8")
    run_convert("--asr_train_config", config, "--asr_model_file", model_file, "--output_dir", tmp_path / "file",
                "--pruning", tmp_path / "pruning.yaml")
    written = yaml.safe_load((tmp_path / "file" / "config.yaml").read_text(encoding="utf-8"))
    assert written["frontend_conf"]["pruning"] == section
    # The model file holds the gates' initial state too, so the directory loads as it is.
    model = load("asr", tmp_path / "file" / "config.yaml", tmp_path / "file" / "model.pth")
    assert model.frontend.controller is not None


def test_a_directory_convert_did_not_write_is_refused_and_left_alone(tmp_path, capsys):
    path, _ = CheckpointWriter(tmp_path).s3prl(small_config())
    config, model_file = build_experiment(tmp_path / "exp", s3prl_config(s3prl_frontend_conf(path, "wav2vec2")))
    elsewhere = tmp_path / "elsewhere.pth"
    elsewhere.write_bytes(b"keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.pth").symlink_to(elsewhere)
    message = convert_error(capsys, "--asr_train_config", config, "--asr_model_file", model_file,
                            "--output_dir", tmp_path / "out")
    assert f"refusing to write into {tmp_path / 'out'}" in message
    assert elsewhere.read_bytes() == b"keep me" and (tmp_path / "out" / "model.pth").is_symlink()
    # Its own earlier output is written again.
    run_convert("--asr_train_config", config, "--asr_model_file", model_file, "--output_dir", tmp_path / "new")
    run_convert("--asr_train_config", config, "--asr_model_file", model_file, "--output_dir", tmp_path / "new")
    assert (tmp_path / "new" / "model.pth").is_file()


def test_local_upstream_whose_checkpoint_is_gone_needs_upstream_checkpoint(tmp_path, capsys):
    path, _ = CheckpointWriter(tmp_path).s3prl(small_config("hubert"))
    config, model_file = build_experiment(tmp_path / "exp", s3prl_config(s3prl_frontend_conf(path, "hubert")))
    copy = tmp_path / "copy.pt"
    shutil.move(path, copy)
    message = convert_error(capsys, "--asr_train_config", config, "--asr_model_file", model_file,
                            "--output_dir", tmp_path / "out")
    assert "hubert_local" in message and str(path) in message and "--upstream_checkpoint" in message
    run_convert("--asr_train_config", config, "--asr_model_file", model_file, "--output_dir", tmp_path / "out",
                "--upstream_checkpoint", copy)
    assert (tmp_path / "out" / "model.pth").is_file()


# ---------------------------------------------------------------------------------------------
# Bad input gets a named error, and main() exits with one line
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def s3prl_experiment(tmp_path):
    path, _ = CheckpointWriter(tmp_path).s3prl(small_config())
    config, model_file = build_experiment(tmp_path / "exp", s3prl_config(s3prl_frontend_conf(path, "wav2vec2",
                                                                                              multilayer=True)))
    return {"config": config, "model": model_file, "values": yaml.safe_load(config.read_text(encoding="utf-8")),
            "out": tmp_path / "out", "tmp": tmp_path}


def rewrite_config(experiment, change) -> Path:
    values = json.loads(json.dumps(experiment["values"]))
    change(values)
    path = experiment["tmp"] / "changed.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


@pytest.mark.parametrize("frontend,expected", [
    ("default", "frontend 'default' is not a self-supervised speech model"),
    ("huggingface", "frontend 'huggingface' cannot be converted: ESPnet 202511's HuggingFaceFrontend returns its "
                    "output lengths in input samples"),
    ("pruned_ssl", "already has frontend: pruned_ssl"),
])
def test_frontend_that_is_not_an_s3prl_ssl_model_is_named(s3prl_experiment, capsys, frontend, expected):
    config = rewrite_config(s3prl_experiment, lambda values: values.update(frontend=frontend))
    message = convert_error(capsys, "--asr_train_config", config, "--asr_model_file", s3prl_experiment["model"],
                            "--output_dir", s3prl_experiment["out"])
    assert expected in message
    assert not s3prl_experiment["out"].exists()


@pytest.mark.parametrize("upstream", ["distilhubert", "apc", "wav2vec2_conformer_relpos", "data2vec"])
def test_upstream_that_cannot_be_mapped_is_refused_by_name(s3prl_experiment, capsys, upstream):
    config = rewrite_config(s3prl_experiment,
                            lambda values: values["frontend_conf"]["frontend_conf"].update(upstream=upstream))
    message = convert_error(capsys, "--asr_train_config", config, "--asr_model_file", s3prl_experiment["model"],
                            "--output_dir", s3prl_experiment["out"])
    assert f"s3prl upstream '{upstream}' cannot be converted" in message


@pytest.mark.parametrize("change,expected", [
    (lambda v: v["frontend_conf"]["frontend_conf"].update(tile_factor=2), "tile_factor=2"),
    (lambda v: v["frontend_conf"]["frontend_conf"].update(extra_conf={"feature_selection": "fairseq_layers"}),
     "extra_conf keys ['feature_selection']"),
    (lambda v: v["frontend_conf"].update(multilayer_feature=False, layer=5), "frontend_conf.layer=5 is out of range"),
    (lambda v: v.update(model="maskctc"), "model 'maskctc' cannot be converted"),
    # the named upstream's architecture (wav2vec2 base) is not the one the model file holds
    (lambda v: v["frontend_conf"]["frontend_conf"].update(upstream="wav2vec2_base_960"),
     "The model file does not match its config's s3prl upstream"),
])
def test_settings_that_cannot_be_reproduced_are_named(s3prl_experiment, capsys, change, expected):
    config = rewrite_config(s3prl_experiment, change)
    message = convert_error(capsys, "--asr_train_config", config, "--asr_model_file", s3prl_experiment["model"],
                            "--output_dir", s3prl_experiment["out"])
    assert expected in message


@pytest.mark.parametrize("change,expected", [
    (lambda state: state.pop("decoder.output_layer.weight"), "does not match its config"),
    (lambda state: state.pop("frontend.featurizer.weights"), "multilayer_feature needs frontend.featurizer.weights"),
    (lambda state: state.update({"frontend.upstream.upstream.model.encoder.layers.0.fc1.weight": torch.zeros(3, 3)}),
     "encoder.transformer.layers.0.feed_forward.intermediate_dense.weight: checkpoint (3, 3)"),
    (lambda state: [state.pop(k) for k in list(state) if k.startswith("frontend.")],
     "has no frontend.upstream.upstream.model.* parameters"),
])
def test_model_file_that_does_not_match_its_config_is_named(s3prl_experiment, capsys, change, expected):
    state = torch.load(s3prl_experiment["model"])
    change(state)
    broken = s3prl_experiment["tmp"] / "broken.pth"
    torch.save(state, broken)
    message = convert_error(capsys, "--asr_train_config", s3prl_experiment["config"], "--asr_model_file", broken,
                            "--output_dir", s3prl_experiment["out"])
    assert expected in message and str(broken) in message
    assert not s3prl_experiment["out"].exists()


def test_older_espnet_models_upstream_keys_convert_alike(s3prl_experiment):
    """ESPnet models trained before s3prl's ``S3PRLUpstream`` hold ``frontend.upstream.model.*``."""
    state = torch.load(s3prl_experiment["model"])
    old = {k.replace("frontend.upstream.upstream.model.", "frontend.upstream.model."): v for k, v in state.items()}
    assert old.keys() != state.keys()
    older = s3prl_experiment["tmp"] / "older.pth"
    torch.save(old, older)
    run_convert("--asr_train_config", s3prl_experiment["config"], "--asr_model_file", s3prl_experiment["model"],
                "--output_dir", s3prl_experiment["out"] / "current")
    run_convert("--asr_train_config", s3prl_experiment["config"], "--asr_model_file", older,
                "--output_dir", s3prl_experiment["out"] / "older")
    current = torch.load(s3prl_experiment["out"] / "current" / "model.pth")
    converted = torch.load(s3prl_experiment["out"] / "older" / "older.pth")
    assert current.keys() == converted.keys() and all(torch.equal(current[k], converted[k]) for k in current)


@pytest.mark.parametrize("args,expected", [
    (["--pruning", "hj_macs0.55"], "--pruning 'hj_macs0.55' is neither a preset"),
    (["--asr_model_file", "missing.pth"], "missing.pth does not exist"),
])
def test_bad_arguments_are_named(s3prl_experiment, capsys, args, expected):
    values = {"--asr_train_config": s3prl_experiment["config"], "--asr_model_file": s3prl_experiment["model"],
              "--output_dir": s3prl_experiment["out"]}
    values.update(dict(zip(args[::2], args[1::2])))
    message = convert_error(capsys, *[item for pair in values.items() for item in pair])
    assert expected in message


def test_every_mapped_upstream_name_is_an_s3prl_upstream_of_its_family():
    from s3prl.nn import S3PRLUpstream

    available = set(S3PRLUpstream.available_names())
    for name, arch in UPSTREAM_ARCHS.items():
        assert name in available, name
        config = s3prl_encoder_config(name, None)
        family = "hubert" if name.startswith("hubert") else "wavlm" if name.startswith("wavlm") else "wav2vec2"
        assert config.model_type == family and config.layer_drop == 0.0, name
        large = "large" in name or name in ("xlsr_53", "xls_r_300m")
        if large or name in ("wav2vec2", "hubert", "wavlm") or "base" in name:
            assert (config.embed_dim, config.num_layers, config.layer_norm_first) == (
                (1024, 24, name != "wav2vec2_large_960") if large else (768, 12, False)), name
    assert set(CHECKPOINT_UPSTREAMS) <= available
    # base and large of each family that s3prl names
    assert s3prl_encoder_config("hubert_large_ll60k", None) == get_config("hubert_large", layer_drop=0.0)
    assert s3prl_encoder_config("wavlm_large", None).num_layers == 24
    assert s3prl_encoder_config("wav2vec2_large_ll60k", None).layer_norm_first


# ---------------------------------------------------------------------------------------------
# Through ESPnet: train with the s3prl frontend, convert, decode the same; fine-tune with a budget
# ---------------------------------------------------------------------------------------------

#: A short ramp: WARMUP * REG_LR = 12 as in the budget tests (test/espnet_prune/pruning/test_budgets_espnet.py),
#: whose ramp is twice as long.
WARMUP, REG_LR = 30, 0.4
STEPS = int(RUN_LENGTH_PER_WARMUP * WARMUP)
FINE_TUNE_LR = 5e-4  # a quarter of the tiny recipe's training learning rate: the model is already trained
TARGET = 0.6
PRUNING = {"units": ["conv", "head", "interm"], "metric": "macs", "target": TARGET, "warmup_steps": WARMUP,
           "reference_seconds": 2, "reg_lr": REG_LR}


def utterances(data_dir: Path) -> Dict[str, np.ndarray]:
    waveforms = {}
    for line in (data_dir / "wav.scp").read_text(encoding="utf-8").splitlines():
        key, path = line.split(maxsplit=1)
        waveforms[key], _ = soundfile.read(path, dtype="float32")
    return waveforms


def hypotheses(decoder, waveforms: Dict[str, np.ndarray]) -> Dict[str, str]:
    return {key: decoder(waveform)[0][0] for key, waveform in waveforms.items()}


def trained_s3prl_experiment(work: Path, corpus: Dict[str, Path], task: str, frontend_conf: Dict,
                             text_files: List[str]) -> Path:
    """asr.sh / slu.sh stages 10-11 with ESPnet's s3prl frontend, a few steps (statistics for
    global_mvn included, so that the config names a file that packing bundles)."""
    config = s3prl_config(frontend_conf, batch_size=2, max_epoch=1, num_iters_per_epoch=10, **NO_PLOTS)
    config_file = write_config(work / "conf" / "train.yaml", config)
    stats = collect_stats(task, work, corpus, config_file, text_files)
    config.update(normalize="global_mvn",
                  normalize_conf={"stats_file": str((stats / "train" / "feats_stats.npz").relative_to(work))})
    write_config(config_file, config)
    exp = work / "exp" / f"{task}_s3prl"
    train(task, work, corpus, config_file, stats, text_files, exp)
    return exp


@pytest.fixture(scope="module")
def asr_s3prl(tmp_path_factory, asr_corpus):
    work = tmp_path_factory.mktemp("convert_asr")
    path, _ = CheckpointWriter(work).s3prl(small_config())
    exp = trained_s3prl_experiment(work, asr_corpus, "asr", s3prl_frontend_conf(path, "wav2vec2", multilayer=True),
                                   ["text"])
    converted = work / "exp" / "asr_converted"
    with contextlib.chdir(work):
        run_convert("--asr_train_config", exp / "config.yaml", "--asr_model_file", exp / "valid.acc.ave.pth",
                    "--output_dir", converted)
    return {"work": work, "exp": exp, "converted": converted, "corpus": asr_corpus}


@pytest.mark.slow
def test_converted_asr_model_decodes_what_the_original_decodes(asr_s3prl):
    from espnet2.bin.asr_inference import Speech2Text

    exp, converted = asr_s3prl["exp"], asr_s3prl["converted"]
    waveforms = utterances(asr_s3prl["corpus"]["valid"])
    with contextlib.chdir(asr_s3prl["work"]):
        original = Speech2Text(exp / "config.yaml", exp / "valid.acc.ave.pth", beam_size=2, device="cpu")
        ours = Speech2Text(converted / "config.yaml", converted / "valid.acc.ave.pth", beam_size=2, device="cpu")
    assert type(ours.asr_model.frontend).__name__ == "PrunedSSLFrontend"
    assert type(original.asr_model.frontend).__name__ == "S3prlFrontend"
    weights = original.asr_model.frontend.featurizer.weights
    assert torch.equal(ours.asr_model.frontend.layer_weights, weights) and weights.std() > 0  # trained, not uniform
    expected, actual = hypotheses(original, waveforms), hypotheses(ours, waveforms)
    assert len(expected) == 4 and expected == actual
    difference = frontend_difference(original.asr_model, ours.asr_model,
                                     [torch.from_numpy(w) for w in waveforms.values()])
    assert difference <= FEATURE_TOLERANCE, difference


@pytest.mark.slow
def test_packed_zip_converts_to_the_same_model_with_its_files(asr_s3prl):
    from espnet2.bin.pack import main as pack_main

    work, exp = asr_s3prl["work"], asr_s3prl["exp"]
    config = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
    stats_file = config["normalize_conf"]["stats_file"]
    packed = work / "asr_s3prl.zip"
    with contextlib.chdir(work):  # asr.sh's packing stage, in this process
        pack_main(["asr", "--asr_train_config", str(exp.relative_to(work) / "config.yaml"),
                   "--asr_model_file", str(exp.relative_to(work) / "valid.acc.ave.pth"), "--option", stats_file,
                   "--outpath", str(packed)])
    with zipfile.ZipFile(packed) as archive:
        assert any(name.endswith("feats_stats.npz") for name in archive.namelist())
    out = work / "from_zip"
    run_convert("--model_zip", packed, "--output_dir", out)
    from_zip = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    copied = Path(from_zip["normalize_conf"]["stats_file"])
    assert copied == out / stats_file and copied.is_file()
    assert copied.read_bytes() == (work / stats_file).read_bytes()
    from_dir = torch.load(asr_s3prl["converted"] / "valid.acc.ave.pth")
    (model_file,) = out.glob("*.pth")  # under the name the zip gives it (pack resolves the symbolic link)
    state = torch.load(model_file)
    assert state.keys() == from_dir.keys() and all(torch.equal(state[k], from_dir[k]) for k in state)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["asr", "slu"])
def test_converted_model_fine_tunes_to_a_mac_budget_and_exports(task, request, tmp_path):
    """asr.sh (slu.sh) --stage 11 --asr_config D/config.yaml --asr_args "--init_param D/<model>.pth", then
    export."""
    experiment = request.getfixturevalue(f"{task}_s3prl")
    work, exp, corpus = experiment["work"], experiment["exp"], experiment["corpus"]
    (tmp_path / "pruning.yaml").write_text(yaml.safe_dump(PRUNING), encoding="utf-8")
    ready = tmp_path / f"{task}_converted_pruning"
    with contextlib.chdir(work):
        run_convert(f"--{task}_train_config", exp / "config.yaml", f"--{task}_model_file", exp / "valid.acc.ave.pth",
                    "--output_dir", ready, "--pruning", tmp_path / "pruning.yaml")
    stats = work / f"{task}_stats"
    fine_tuned = tmp_path / "exp" / f"{task}_pruned"
    train(task, work, corpus, ready / "config.yaml", stats, ["text"], fine_tuned,
          extra=["--init_param", ready / "valid.acc.ave.pth", "--max_epoch", "2",
                 "--num_iters_per_epoch", str(STEPS // 2), "--optim_conf", f"lr={FINE_TUNE_LR}"])
    log = (work / f"{fine_tuned.name}.log").read_text(encoding="utf-8")
    assert "missed its target" not in log
    assert f"Loading pretrained params from {ready / 'valid.acc.ave.pth'}" in log  # from the converted weights
    compact = fine_tuned / "last.pruned.pth"
    with contextlib.chdir(work):
        export_cli.main(["--train_config", str(fine_tuned / "config.yaml"),
                         "--model_file", str(fine_tuned / "2epoch.pth"), "--output", str(compact)])
    report = json.loads(compact.with_suffix(".json").read_text(encoding="utf-8"))
    exported = report["pruning"]["budgets"]["total"]["exported"]
    assert abs(exported - TARGET) <= BUDGET_TOLERANCE, report["pruning"]
    assert report["encoder"]["ratio"]["macs"]["total"] == pytest.approx(exported, abs=1e-9)


@pytest.fixture(scope="module")
def slu_s3prl(tmp_path_factory, slu_corpus):
    work = tmp_path_factory.mktemp("convert_slu")
    path, _ = CheckpointWriter(work).s3prl(small_config("hubert", True, normalize_waveform=True))
    exp = trained_s3prl_experiment(work, slu_corpus, "slu",
                                   s3prl_frontend_conf(path, "hubert", layer=1, normalize=True), ["text"])
    converted = work / "exp" / "slu_converted"
    with contextlib.chdir(work):
        run_convert("--slu_train_config", exp / "config.yaml", "--slu_model_file", exp / "valid.acc.ave.pth",
                    "--output_dir", converted)
    return {"work": work, "exp": exp, "converted": converted, "corpus": slu_corpus}


@pytest.mark.slow
def test_converted_slu_model_decodes_what_the_original_decodes(slu_s3prl):
    from espnet2.bin.slu_inference import Speech2Understand

    exp, converted = slu_s3prl["exp"], slu_s3prl["converted"]
    waveforms = utterances(slu_s3prl["corpus"]["valid"])
    with contextlib.chdir(slu_s3prl["work"]):
        original = Speech2Understand(exp / "config.yaml", exp / "valid.acc.ave.pth", beam_size=2, device="cpu")
        ours = Speech2Understand(converted / "config.yaml", converted / "valid.acc.ave.pth", beam_size=2,
                                 device="cpu")
    assert type(ours.asr_model).__name__ == "PrunedESPnetSLUModel"
    assert ours.asr_model.frontend.layer == 1 and ours.asr_model.frontend.encoder.config.num_layers == 1
    expected, actual = hypotheses(original, waveforms), hypotheses(ours, waveforms)
    assert len(expected) == 4 and expected == actual
    difference = frontend_difference(original.asr_model, ours.asr_model,
                                     [torch.from_numpy(w) for w in waveforms.values()])
    assert difference <= FEATURE_TOLERANCE, difference
