"""prune_stages.sh with several sizes from one run (``frontend_conf.pruning.targets``): every
size is exported from latest.pth and decoded and scored as its own experiment, and the
RESULTS.md of every size is written (espnet_prune.bin.size_results).

The recipe runs against the fake ESPnet checkout of ``test_recipes`` (recording asr.sh / slu.sh
and a recording ``--python``).
"""

import json

import yaml

from espnet_prune.bin import size_results
from test.espnet_prune.recipes.test_recipes import (  # noqa: F401 (fixtures)
    DEFAULT_EXP,
    fake_espnet,
    linked,
    option,
    task,
    trained,
)


def multi_size(exp_dir, targets=(0.8, 0.6)):
    """Turn the trained config into a run with several sizes; what stage 11 leaves: latest.pth."""
    config = yaml.safe_load((exp_dir / "config.yaml").read_text())
    config["frontend_conf"]["pruning"]["targets"] = list(targets)
    (exp_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (exp_dir / "latest.pth").write_bytes(b"")


def test_every_size_is_exported_decoded_and_scored(linked, task):  # noqa: F811 (fixtures)
    recipe, run_recipe = linked
    exp, model = DEFAULT_EXP[task]
    exp_dir = trained(recipe, exp, model, f"conf/train_{task}_wav2vec2.yaml")
    multi_size(exp_dir)
    if task == "slu":  # what slu.sh's stage 13 leaves in each size's experiment for local/results.sh
        for size in ("target0.80", "target0.60"):
            scores = recipe / f"{exp}_pruned" / size / "decode_slu" / "test" / "score_intent"
            scores.mkdir(parents=True)
            (scores / "result.txt").write_text("intent accuracy: 50.00 % (1 / 2)\n")
    result, calls = run_recipe("--stage", "12")
    assert result.returncode == 0, result.stderr
    export, decode_first, decode_second, results = calls
    assert export[:3] == ["python", "-m", "espnet_prune.bin.export"]
    assert (option(export, "model_file"), option(export, "output_dir")) == (f"{exp}/latest.pth", f"{exp}_pruned")
    for call, size in ((decode_first, "target0.80"), (decode_second, "target0.60")):
        assert call[0] == f"{task}.sh"
        assert option(call, f"{task}_exp") == f"{exp}_pruned/{size}"
        assert option(call, f"inference_{task}_model") == "latest.pth"
        assert (option(call, "stage"), option(call, "stop_stage")) == ("12", "10000")
    assert results == ["python", "-m", "espnet_prune.bin.size_results", f"{exp}_pruned"]
    if task == "slu":
        for size in ("target0.80", "target0.60"):
            assert "|decode_slu/test|2|1|50.00|" in (recipe / f"{exp}_pruned" / size / "RESULTS.md").read_text()

    # Scoring only: no export, every size scored again.
    result, calls = run_recipe("--stage", "13")
    assert result.returncode == 0, result.stderr
    assert [call[0] for call in calls] == [f"{task}.sh", f"{task}.sh", "python"]
    # Without latest.pth (no training yet) it says so.
    (exp_dir / "latest.pth").unlink()
    result, calls = run_recipe("--stage", "12")
    assert result.returncode != 0 and "latest.pth does not exist: train the model first" in result.stderr


SCLITE = """\
|===============================================================|
| SPKR    | # Snt  # Wrd | Corr    Sub    Del    Ins    Err  S.Err |
|---------+--------------+--------------------------------------|
| Sum/Avg |   10     62  | {corr:.1f}   14.5    4.8    3.2   {err:.1f}   70.0 |
|===============================================================|
"""


def test_results_md_has_a_row_per_size_and_test_set(tmp_path):
    rows = []
    for name, target, err in (("target0.80", 0.8, 22.6), ("target0.60", 0.6, 31.0)):
        rows.append({"size": name, "output_dir": str(tmp_path / name), "targets": {"total": target}, "step": 100,
                     "params": 1e6 * (target + 0.05), "params_ratio": target + 0.05, "macs": 1e9 * (target + 0.01),
                     "macs_ratio": target + 0.01, "dense_params": 1e6, "dense_macs": 1e9,
                     "exported": {"total": target}, "reached": True})
        for test in ("dev", "test"):
            for metric, value in (("wer", err), ("cer", err / 2)):
                score = tmp_path / name / "decode_asr_asr_model_latest" / test / f"score_{metric}"
                score.mkdir(parents=True)
                (score / "result.txt").write_text(SCLITE.format(corr=100 - value, err=value + (test == "test")))
    summary = {"train_config": "exp/x/config.yaml", "model_file": "exp/x/latest.pth", "sizes": rows}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    size_results.main([str(tmp_path)])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| size | target | params ratio | MACs ratio | decode / test set | WER (%) | CER (%) |" in text
    assert "| target0.80 | total 0.80 | 0.850 | 0.810 | decode_asr_asr_model_latest/dev | 22.6 | 11.3 |" in text
    assert "| target0.60 | total 0.60 | 0.650 | 0.610 | decode_asr_asr_model_latest/test | 32.0 | 16.5 |" in text
    assert len([line for line in text.splitlines() if line.startswith("| target")]) == 4
    assert "exp/x/latest.pth" in text
