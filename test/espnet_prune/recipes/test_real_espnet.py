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

    (exp,) = [path for path in (recipe / "exp").glob(f"{task}_train_{task}_pruned_ssl_raw_char_*")]
    assert (exp / "valid.cer_ctc.ave.pruned.pth").is_file()
    report = (exp / "valid.cer_ctc.ave.pruned.json").read_text()
    assert '"ratio"' in report
    test_utterances = len((recipe / "dump" / "raw" / "test" / "text").read_text().splitlines())
    assert test_utterances == NUM_TEST
    rows = results_rows(exp / "RESULTS.md")
    decoded = [key for key in rows if "valid.cer_ctc.ave.pruned/test " in key]
    assert decoded, rows
    for key in decoded:
        # sclite scored exactly the test set: one sentence per utterance, no shifted ids.
        assert rows[key][1] == str(test_utterances), (key, rows[key])
    for trn in exp.glob("*/test/score_*/hyp.trn"):
        assert len(trn.read_text().splitlines()) == test_utterances, trn
    if task == "slu":
        text = (exp / "RESULTS.md").read_text()
        assert "## Intent accuracy" in text
        assert re.search(rf"\|[^|]*valid.cer_ctc.ave.pruned/test\|{test_utterances}\|\d+\|[\d.]+\|", text), text
