"""The espeak_demo recipes on ESPnet's real asr.sh / slu.sh, stages 1-13, with tiny settings.

Runs only when ``ESPNET_ROOT`` names an ESPnet 202511 checkout (egs2/TEMPLATE, tools, utils;
sclite reachable through its tools/extra_path.sh or PATH); each run takes minutes on a CPU.
The recipe is copied into ``tmp_path`` and linked with ``TEMPLATE_prune/setup.sh``, then
``./run.sh`` runs as a user would, through the plugin's launcher: data synthesis, the SSL
stand-in, training with HJ-Pruning, export, decoding of the compact model and sclite scoring.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from shlex import quote as shlex_quote
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[3]
EGS2 = REPO / "egs2"
ESPNET_ROOT = os.environ.get("ESPNET_ROOT")
LINKED = ("asr.sh", "slu.sh", "pyscripts", "scripts", "utils", "steps", "data", "dump", "exp")

pytestmark = [pytest.mark.skipif(
    not ESPNET_ROOT or not (Path(ESPNET_ROOT) / "egs2" / "TEMPLATE" / "asr1" / "asr.sh").is_file(),
    reason="ESPNET_ROOT is not set to an ESPnet 202511 checkout (egs2/TEMPLATE): the real-recipe tests "
           "run asr.sh / slu.sh only with one"),
    pytest.mark.slow]  # end-to-end: deselected by ``pytest -m "not slow"``

NUM_TEST = 4
CORPUS = f"--num_train 24 --num_dev 4 --num_test {NUM_TEST} --num_lm_sentences 100 --num_dev_voices 2 " \
         "--num_test_voices 2 --seed 0"
TRAIN = "--max_epoch 1 --num_iters_per_epoch 6 --batch_size 4 --scheduler_conf total_steps=6 --seed 0"


def recipe_copy(tmp_path: Path, task: str) -> Path:
    egs2 = tmp_path / "egs2"
    ignore = shutil.ignore_patterns(*LINKED)
    shutil.copytree(EGS2 / "TEMPLATE_prune", egs2 / "TEMPLATE_prune", symlinks=True, ignore=ignore)
    shutil.copytree(EGS2 / "espeak_demo", egs2 / "espeak_demo", symlinks=True, ignore=ignore)
    # espeak_demo/slu1 links its intent scoring from the SLURP recipe.
    (egs2 / "slurp" / "slu1").mkdir(parents=True)
    shutil.copytree(EGS2 / "slurp" / "slu1" / "local", egs2 / "slurp" / "slu1" / "local")
    return egs2 / "espeak_demo" / f"{task}1"


def run(command: List[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def results_rows(results_md: Path) -> Dict[str, List[str]]:
    """``{"<decode dir>/<set> <metric>": row cells}`` of show_asr_result.sh's tables."""
    rows, metric = {}, None
    for line in results_md.read_text().splitlines():
        heading = re.match(r"^### (WER|CER|TER)", line)
        if heading:
            metric = heading.group(1)
        elif line.startswith("## "):  # another table (e.g. the intent accuracy)
            metric = None
        elif metric and line.startswith("|") and not line.startswith(("|dataset", "|---")):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[f"{cells[0]} {metric}"] = cells
    return rows


@pytest.mark.parametrize("task", ["asr", "slu"])
def test_run_sh_stages_1_to_13_on_the_real_scripts(task, tmp_path):
    recipe = recipe_copy(tmp_path, task)
    setup = run(["../../TEMPLATE_prune/setup.sh", ESPNET_ROOT], recipe, 60)
    assert setup.returncode == 0, setup.stderr
    result = run(["./run.sh", "--stage", "1", "--stop_stage", "13", "--ngpu", "0", "--nj", "1", "--inference_nj", "1",
                  "--local_data_opts", CORPUS, "--standin_args", TRAIN,
                  f"--{task}_args", f"{TRAIN} --frontend_conf pruning.warmup_steps=4"], recipe, 3000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    check_outputs(recipe, task, NUM_TEST)


#: A budget over the whole model (model_conf.pruning: here the frontend and the CTC layer, the parts
#: the demo's CTC model has) with two sizes, instead of the config's frontend_conf.pruning.
WHOLE_MODEL_SIZES = ("--frontend_conf pruning=null --model_conf pruning.preset=hj_macs0.6 "
                     "--model_conf pruning.targets=[0.8,0.6] --model_conf pruning.warmup_steps=2 "
                     "--model_conf pruning.hold_steps=2 --model_conf pruning.reference_seconds=5")


def test_a_whole_model_run_with_several_sizes_on_the_real_scripts(tmp_path):
    """prune_stages.sh with model_conf.pruning.targets through ESPnet's real asr.sh: every size is
    exported from latest.pth, decoded and scored as its own experiment, and EXP_pruned/RESULTS.md
    gives the whole model's ratios."""
    from espnet_prune.export.report import ExportReport, SizesSummary

    recipe = recipe_copy(tmp_path, "asr")
    setup = run(["../../TEMPLATE_prune/setup.sh", ESPNET_ROOT], recipe, 60)
    assert setup.returncode == 0, setup.stderr
    result = run(["./run.sh", "--stage", "1", "--stop_stage", "13", "--ngpu", "0", "--nj", "1", "--inference_nj", "1",
                  "--local_data_opts", CORPUS, "--standin_args", TRAIN, "--asr_tag", "whole",
                  "--asr_args", f"{TRAIN} {WHOLE_MODEL_SIZES}"], recipe, 3000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    exp = recipe / "exp" / "asr_whole_pruned"
    summary = SizesSummary.read(exp / "summary.json")
    sizes = [row.size for row in summary.sizes]
    assert sizes == ["target0.80", "target0.60"] and summary.whole_model()
    test_utterances = len((recipe / "dump" / "raw" / "test" / "text").read_text().splitlines())
    for size in sizes:
        report = ExportReport.read(exp / size / "latest.json")
        assert report.model.parts == ["frontend", "ctc"] and report.downstream == {}
        config = (exp / size / "config.yaml").read_text()
        assert "ssl_encoder.pth" not in config and "pruning" not in config
        rows = results_rows(exp / size / "RESULTS.md")
        decoded = [key for key in rows if "latest/test " in key]
        assert decoded, rows
        assert all(rows[key][1] == str(test_utterances) for key in decoded), rows
    results = (exp / "RESULTS.md").read_text()
    assert "| model params ratio | model MACs ratio | frontend params ratio | frontend MACs ratio |" in results
    assert all(f"| {size} | total " in results for size in sizes), results


def check_outputs(recipe: Path, task: str, num_test: int) -> None:
    """What a stages 1-13 run of espeak_demo/<task>1 must leave: the compact model exported to the
    standalone experiment EXP_pruned, and its RESULTS.md scoring exactly the test set."""
    trained_exps = [path for path in (recipe / "exp").glob(f"{task}_train_{task}_pruned_ssl_raw_char_*")
                    if not path.name.endswith("_pruned")]
    assert len(trained_exps) == 1, trained_exps
    # prune_stages.sh exports the compact model to the standalone experiment <EXP>_pruned and
    # decodes and scores it there.
    exp = trained_exps[0].with_name(trained_exps[0].name + "_pruned")
    assert (exp / "config.yaml").is_file() and (exp / "valid.cer_ctc.ave.pth").is_file()
    report = (exp / "valid.cer_ctc.ave.json").read_text()
    assert '"ratio"' in report
    assert "ssl_encoder.pth" not in (exp / "config.yaml").read_text()  # standalone: no pretrained weights
    test_utterances = len((recipe / "dump" / "raw" / "test" / "text").read_text().splitlines())
    assert test_utterances == num_test
    rows = results_rows(exp / "RESULTS.md")
    decoded = [key for key in rows if "valid.cer_ctc.ave/test " in key]
    assert decoded, rows
    for key in decoded:
        # sclite scored exactly the test set: one sentence per utterance, no shifted ids.
        assert rows[key][1] == str(test_utterances), (key, rows[key])
    for trn in exp.glob("*/test/score_*/hyp.trn"):
        assert len(trn.read_text().splitlines()) == test_utterances, trn
    if task == "slu":
        text = (exp / "RESULTS.md").read_text()
        assert "## Intent accuracy" in text
        assert re.search(rf"\|[^|]*valid.cer_ctc.ave/test\|{test_utterances}\|\d+\|[\d.]+\|", text), text


def real_tag_block(task: str) -> str:
    """asr.sh's / slu.sh's own "Set tag for naming of model directory" block, verbatim."""
    script = Path(ESPNET_ROOT) / "egs2" / "TEMPLATE" / f"{task}1" / f"{task}.sh"
    lines = script.read_text().splitlines()
    start = lines.index("# Set tag for naming of model directory")
    end = lines.index("fi", start)
    return "\n".join(lines[start:end + 1])


NAMING_CASES = [
    {"config": "conf/train_asr_pruned_ssl.yaml", "token_type": "char",
     "args": "--max_epoch 1 --frontend_conf pruning.preset=hj_params0.6"},
    {"config": "conf/tuning/train_x.yaml", "lang": "en", "speed_perturb_factors": "0.9 1.0 1.1"},
    {"token_type": "bpe", "nbpe": "5000", "feats_type": "fbank_pitch", "args": "--a=b|c --d /e/f"},
    {"config": "conf/train_x.yaml", "token_type": "hugging_face", "hugging_face_model_name_or_path": "org/model"},
]


@pytest.mark.parametrize("case", range(len(NAMING_CASES)))
@pytest.mark.parametrize("task", ["asr", "slu"])
def test_experiment_directory_is_named_as_the_real_task_script_names_it(task, case, tmp_path):
    """prune_stages.sh passes --asr_exp / --slu_exp to every stage; it must be the directory
    the real script would have chosen (deliverable: runs that differ only in their args never
    share a directory)."""
    values = dict(expdir="exp", feats_type="raw", lang="noinfo", token_type="bpe", nbpe="30", config="",
                  args="", speed_perturb_factors="", hugging_face_model_name_or_path="")
    values.update(NAMING_CASES[case])
    if task == "slu" and values["token_type"] == "hugging_face":
        pytest.skip("slu.sh has no hugging_face token type")
    # What the real script computes (its own lines, with the variables it parses set).
    assignments = {f"{task}_tag": "", f"{task}_config": values["config"], f"{task}_args": values["args"],
                   **{key: values[key] for key in ("feats_type", "lang", "token_type", "nbpe",
                                                   "speed_perturb_factors", "hugging_face_model_name_or_path")}}
    program = "".join(f"{key}={shlex_quote(value)}\n" for key, value in assignments.items())
    program += real_tag_block(task) + f'\necho "{values["expdir"]}/{task}_${{{task}_tag}}"\n'
    expected = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout.strip()

    # What prune_stages.sh passes on: a recipe whose task script only records its options.
    (tmp_path / f"{task}.sh").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > options.txt\n')
    (tmp_path / f"{task}.sh").chmod(0o755)
    (tmp_path / "path.sh").write_text("")
    options = ["--expdir", values["expdir"]]
    for key in ("feats_type", "lang", "token_type", "nbpe", "speed_perturb_factors", "hugging_face_model_name_or_path"):
        if key in NAMING_CASES[case]:
            options += [f"--{key}", values[key]]
    if values["config"]:
        options += [f"--{task}_config", values["config"]]
    if values["args"]:
        options += [f"--{task}_args", values["args"]]
    result = run([str(EGS2 / "TEMPLATE_prune" / "prune_stages.sh"), task, "--stage", "2", "--stop_stage", "2",
                  *options], tmp_path, 60)
    assert result.returncode == 0, result.stderr
    passed = (tmp_path / "options.txt").read_text().splitlines()
    assert passed[passed.index(f"--{task}_exp") + 1] == expected
