"""The reduced demo (``--size tiny``), as CI runs it: every stage, through the CLI, with the
results table, ``results.json`` for every system, the plot, and a rerun that skips what is done;
and the SLU task's reduced run, scored by intent accuracy."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet_prune.demo.settings import SIZES

#: End-to-end (ESPnet training runs): deselected by ``pytest -m "not slow"``, run by ``make test``.
pytestmark = pytest.mark.slow

TINY = SIZES["tiny"]
SYSTEM_FIELDS = {"name", "method", "target", "expected_ratio", "params", "params_ratio", "macs", "macs_ratio",
                 "reference_seconds", "model_params", "latency_ms", "wer", "cer", "train_config", "model_file"}
STEPS = ["data", "format", "token_list", "lm_stats", "lm_train", "lm_perplexity",
         "lm_prune_data_lowrank_incremental", "asr_stats", "ssl_standin", "train_dense", "train_dense_seed1",
         "train_hj_macs_0.60", "train_hj_params_0.60", "export_hj_macs_0.60", "export_hj_params_0.60",
         "decode_dense", "decode_dense_seed1", "decode_hj_macs_0.60", "decode_hj_params_0.60",
         "decode_hj_macs_0.60_int8", "decode_hj_params_0.60_int8", "decode_dense_lm_dense",
         "decode_dense_lm_data_lowrank_incremental_target0.50", "score", "report"]


def run_demo(output_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "espnet_prune.bin.demo", "--size", "tiny", "--output_dir",
                           str(output_dir), *options], capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    result = run_demo(output_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir, result.stdout


def test_it_says_how_it_runs_and_ends_with_the_results_path(tiny_demo):
    output_dir, stdout = tiny_demo
    lines = stdout.strip().splitlines()
    assert "ESPnet's egs2 TEMPLATE is absent" in stdout
    assert lines[-1] == f"RESULTS: {output_dir.resolve() / 'results.json'}"


def test_every_stage_reports_its_progress(tiny_demo):
    _, stdout = tiny_demo
    for step in STEPS:
        assert re.search(rf"\] stage \S+ +{re.escape(step)}: done in \d+", stdout), step
    assert stdout.index(" data: done") < stdout.index(" token_list: done") < stdout.index(" ssl_standin: done")
    assert stdout.index(" ssl_standin: done") < stdout.index(" train_hj_macs_0.60: started")


def test_results_json_has_every_system_with_its_costs_latency_and_errors(tiny_demo):
    output_dir, stdout = tiny_demo
    results = json.loads((output_dir / "results.json").read_text())
    systems = {entry["name"]: entry for entry in results["systems"]}
    assert list(systems) == ["dense", "dense_seed1", "hj_macs_0.60", "hj_params_0.60"]
    for entry in systems.values():
        assert SYSTEM_FIELDS <= set(entry)
        assert entry["latency_ms"] > 0 and 0 <= entry["cer"] and 0 <= entry["wer"]
        assert Path(entry["model_file"]).is_file() and Path(entry["train_config"]).is_file()
        assert entry["reference_seconds"] == TINY["reference_seconds"]
    dense = systems["dense"]
    assert (dense["method"], dense["target"], dense["expected_ratio"]) == ("dense", None, None)
    assert dense["macs_ratio"] == 1.0 and dense["params_ratio"] == 1.0
    for name, method in (("hj_macs_0.60", "hj_macs"), ("hj_params_0.60", "hj_params")):
        entry = systems[name]
        assert entry["method"] == method and entry["target"] == 0.6
        assert entry["model_file"].endswith(f"_{name}_pruned/latest.pth")
        assert entry["train_config"].endswith(f"_{name}_pruned/config.yaml")
        assert 0 < entry["expected_ratio"]["total"] <= 1.0
        assert entry["macs"] <= dense["macs"] and entry["params"] <= dense["params"]
        assert entry["macs_ratio"] == pytest.approx(entry["macs"] / dense["macs"])
    fusion = results["lm_fusion"]
    assert fusion["asr_system"] == "dense"
    lms = {entry["lm"]: entry for entry in fusion["entries"]}
    assert list(lms) == ["none", "dense", "data_lowrank_incremental_target0.50"]
    assert lms["none"]["wer"] == dense["wer"]
    assert lms["data_lowrank_incremental_target0.50"]["params_ratio"] == pytest.approx(0.5, abs=0.02)
    assert lms["dense"]["test_perplexity"] > 1
    # Latency is the whole decode, the fusion system's with each LM too.
    assert "Speech2Text" in results["latency"]["what"] and results["latency"]["decode_config"]["beam_size"] >= 1
    assert all(entry["latency_ms"] > 0 for entry in lms.values())
    # The table printed before the last line shows every system.
    for name in systems:
        assert re.search(rf"^{re.escape(name)} ", stdout, re.MULTILINE)


def test_seeds_of_one_system_are_grouped_and_the_papers_claims_get_verdicts(tiny_demo):
    output_dir, stdout = tiny_demo
    results = json.loads((output_dir / "results.json").read_text())
    seeds = {entry["name"]: entry["seed"] for entry in results["systems"]}
    assert seeds == {"dense": 0, "dense_seed1": 1, "hj_macs_0.60": 0, "hj_params_0.60": 0}
    for name, seed in seeds.items():  # ESPnet's trainer ran with the demo's seed plus the system's
        config = yaml.safe_load((output_dir / "exp" / f"asr_{name}" / "config.yaml").read_text())
        assert config["seed"] == seed
    comparison = results["comparison"]
    groups = {(group["method"], group["target"]): group for group in comparison["groups"]}
    dense = groups[("dense", None)]
    assert [run["name"] for run in dense["runs"]] == ["dense", "dense_seed1"]
    assert dense["min"]["error"] <= dense["mean"]["error"] <= dense["max"]["error"]
    assert dense["mean"]["error"] == pytest.approx((systems_wer(results, "dense") + systems_wer(results, "dense_seed1"))
                                                   / 2)
    assert len(comparison["claims"]) == 5 and all(claim["verdict"] for claim in comparison["claims"])
    # hj_macs 0.6 is in neither claim's MAC range but the last (40-50 % less computation).
    assert [claim["verdict"] == "not tested" for claim in comparison["claims"]] == [True] * 4 + [False]
    results_md = (output_dir / "RESULTS.md").read_text()
    assert "## The paper's claims on this run" in results_md and "## The paper's claims on this run" in stdout


def systems_wer(results, name):
    return next(entry["wer"] for entry in results["systems"] if entry["name"] == name)


def test_the_compact_systems_are_decoded_in_int8_and_compared_with_fp32(tiny_demo):
    output_dir, stdout = tiny_demo
    int8 = json.loads((output_dir / "results.json").read_text())["int8"]
    assert "--quantize_asr_model true" in int8["what"]
    assert [entry["name"] for entry in int8["entries"]] == ["hj_macs_0.60", "hj_params_0.60"]
    for entry in int8["entries"]:
        log = Path(entry["decode_dir"]) / "logdir" / "asr_inference.1.log"
        assert "--quantize_asr_model true" in log.read_text()  # ESPnet's own flag did the quantizing
        assert entry["utterances"] == TINY["num_test"] and 0 <= entry["identical"] <= entry["utterances"]
        assert entry["agreement"] == pytest.approx(entry["identical"] / entry["utterances"])
        assert entry["change"]["wer"] == pytest.approx(entry["int8"]["wer"] - entry["fp32"]["wer"])
        # The compact frontend's Linear layers (projection, q/k/v/out, FFN) are among those quantized.
        assert entry["frontend_modules"]["int8_linear"] > 0 and entry["frontend_modules"]["float_linear"] == 0
    assert "Dynamic int8 quantization (--quantize_asr_model true) of the compact models:" in stdout


def test_the_plot_lies_beside_results_json(tiny_demo):
    output_dir, _ = tiny_demo
    plot = output_dir / "results.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((output_dir / "results.json").read_text())["plot"] == str(plot.resolve())


def test_a_rerun_skips_finished_steps(tiny_demo):
    output_dir, _ = tiny_demo
    result = run_demo(output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for step in ("data", "ssl_standin", "train_hj_macs_0.60", "decode_dense_lm_dense"):
        assert re.search(rf"{step}: done before, skipped", result.stdout), step
    assert result.stdout.strip().splitlines()[-1].startswith("RESULTS: ")


def test_the_slu_demo_trains_decodes_and_scores_intents(tmp_path):
    result = run_demo(tmp_path, "--task", "slu", "--systems", "dense,hj_params:0.6")  # one seed each
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"RESULTS: {tmp_path.resolve() / 'results.json'}"
    for step in ("slu_stats", "ssl_standin", "train_hj_params_0.60", "export_hj_params_0.60", "decode_dense", "score"):
        assert re.search(rf"{step}: done in", result.stdout), step
    assert not re.search(r" (lm_stats|lm_train|lm_prune\S*): ", result.stdout)  # no LM stages, as in SLURP
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["task"] == "slu" and results["lm_fusion"] is None
    for entry in results["systems"]:
        assert (SYSTEM_FIELDS | {"intent_acc"}) <= set(entry) and 0 <= entry["intent_acc"] <= 1
        # a pruned system decodes its exported directory exp/slu_<system>_pruned
        suffix = "" if entry["method"] == "dense" else "_pruned"
        assert Path(entry["train_config"]).parent.name == f"slu_{entry['name']}{suffix}"
    # Every intent of the templates is one token, so that an intent is one CTC output.
    tokens = (tmp_path / "data" / "token_list" / "char" / "tokens.txt").read_text().split()
    assert set((tmp_path / "data" / "nlsyms.txt").read_text().split()) <= set(tokens)
    assert re.search(r"intent acc +WER +CER", result.stdout)


#: The run beside the fixture's: a multi-size system, a whole-model budget and a latency budget, with
#: the fixture's dense and hj_macs 0.6 systems (no LM, to stay small).
MULTI = "hj_macs_multi_0.80_0.60"
MORE_SYSTEMS = ["--systems", "dense,hj_macs:0.6,hj_macs_multi:0.8/0.6,whole_model:0.6,hj_latency:0.6",
                "--lm_prunings", ""]
#: What that run shares with the fixture's, under the same settings: copied instead of run again.
SHARED = ("data", "dump", "exp/asr_stats_raw_char", "exp/asr_ssl_standin", "exp/asr_dense", "exp/asr_hj_macs_0.60",
          "exp/asr_hj_macs_0.60_pruned")


@pytest.fixture(scope="module")
def more_systems(tiny_demo, tmp_path_factory):
    """The demo with :data:`MORE_SYSTEMS`, started from the fixture's finished corpus, stand-in, dense and
    hj_macs 0.6 steps (:data:`SHARED`, with their done markers): the demo is deterministic (doc/demo.md,
    reproducibility), so running those steps again would give the same files."""
    from espnet_prune.bin import demo

    source = tiny_demo[0]
    output_dir = tmp_path_factory.mktemp("more_systems")
    args = demo.get_parser().parse_args(["--size", "tiny", "--output_dir", str(output_dir), *MORE_SYSTEMS])
    demo.check_settings_file(output_dir, demo.settings_from_args(args), None)
    for name in SHARED:
        shutil.copytree(source / name, output_dir / name, symlinks=True)
    result = run_demo(output_dir, *MORE_SYSTEMS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for step in ("data", "ssl_standin", "train_dense", "export_hj_macs_0.60", "decode_hj_macs_0.60_int8"):
        assert re.search(rf"{step}: done before, skipped", result.stdout), step
    return output_dir, result.stdout


def test_a_multi_size_run_is_exported_decoded_and_compared_with_the_separate_run(more_systems):
    """One hj_macs_multi run at (0.8, 0.6) beside the separate hj_macs run at 0.6."""
    output_dir, stdout = more_systems
    for step in (f"train_{MULTI}", f"export_{MULTI}", f"decode_{MULTI}/target0.80", f"decode_{MULTI}/target0.60_int8"):
        assert re.search(rf"{re.escape(step)}: done in", stdout), step
    exported = output_dir / "exp" / f"asr_{MULTI}_pruned"
    assert [row["size"] for row in json.loads((exported / "summary.json").read_text())["sizes"]] == [
        "target0.80", "target0.60"]
    results = json.loads((output_dir / "results.json").read_text())
    systems = {entry["name"]: entry for entry in results["systems"]}
    assert list(systems) == ["dense", "hj_macs_0.60", f"{MULTI}/target0.80", f"{MULTI}/target0.60",
                             "whole_model_0.60", "hj_latency_0.60"]
    large, small = systems[f"{MULTI}/target0.80"], systems[f"{MULTI}/target0.60"]
    for entry, target in ((large, 0.8), (small, 0.6)):
        assert SYSTEM_FIELDS <= set(entry) and entry["system_name"] == MULTI and entry["target"] == target
        assert entry["model_file"] == str(exported / f"target{target:.2f}" / "latest.pth")
    # (The tiny run is far too short to reach its targets; the smaller size still costs less.)
    assert small["macs"] <= large["macs"] and 0 < large["step"] < small["step"]  # the larger size is kept first
    (comparison,) = results["multisize"]
    assert comparison["system"] == MULTI and comparison["targets"] == [0.8, 0.6]
    first, second = comparison["sizes"]
    assert first["separate"] is None and second["separate"]["name"] == "hj_macs_0.60"
    assert second["difference"]["wer"] == pytest.approx(small["wer"] - systems["hj_macs_0.60"]["wer"])
    training = comparison["training"]
    # 2 sizes x (6 + 16) = 44 steps, trained in whole epochs of 12.
    assert training["one_run"]["steps"] == 48
    assert training["separate"]["steps"] == TINY["finetune_steps"] and not training["complete"]
    for record in (training["one_run"], training["separate"]):
        assert record["wall_seconds"] > 0 and record["cpu_seconds"] > 0
    report = (output_dir / "RESULTS.md").read_text()
    assert f"## Several sizes from one run: {MULTI} against separate hj_macs runs" in report
    assert "| fine-tuning | steps | wall | CPU |" in report


def test_the_whole_model_and_latency_budgets_train_export_decode_and_report_their_latency(more_systems):
    """whole_model: model_conf.pruning over frontend, encoder (the pruned_transformer twin) and CTC, priced
    for the demo's decoding; hj_latency: the frontend's latency of a table profiled in the run. Both are
    exported, decoded (fp32 and int8) and timed as whole decodes beside dense."""
    output_dir, stdout = more_systems
    for name in ("whole_model_0.60", "hj_latency_0.60"):
        for step in (f"train_{name}", f"export_{name}", f"decode_{name}", f"decode_{name}_int8"):
            assert re.search(rf"{re.escape(step)}: done in", stdout), step
    assert stdout.index(" latency_table: done") < stdout.index(" train_hj_latency_0.60: started")
    results = json.loads((output_dir / "results.json").read_text())
    systems = {entry["name"]: entry for entry in results["systems"]}
    dense, whole, latency = systems["dense"], systems["whole_model_0.60"], systems["hj_latency_0.60"]
    for entry in systems.values():  # every system's whole decode, and its frontend's part, against dense's
        assert entry["latency_ms"] > entry["frontend_latency_ms"] > 0
        assert entry["latency_ratio"] == pytest.approx(entry["latency_ms"] / dense["latency_ms"])
        assert entry["frontend_latency_ratio"] == pytest.approx(entry["frontend_latency_ms"]
                                                                / dense["frontend_latency_ms"])
    for entry in (whole, latency):
        assert entry["target"] == 0.6 and entry["model_file"].endswith(f"_{entry['name']}_pruned/latest.pth")
        assert 0 < entry["exported_ratio"]["total"] <= 1.0 and entry["macs"] <= dense["macs"]

    # The whole-model budget: the frontend takes none; the encoder is swapped for its prunable twin.
    trained = yaml.safe_load((output_dir / "exp" / "asr_whole_model_0.60" / "config.yaml").read_text())
    assert trained["frontend_conf"]["pruning"] is None and trained["encoder"] == "pruned_transformer"
    pruning = trained["model_conf"]["pruning"]
    assert (pruning["metric"], pruning["target"], pruning["reference_seconds"]) == ("macs", 0.6, 2.0)
    assert pruning["decoding"] == {"beam_size": TINY["beam_size"], "tokens_per_second": 18.0, "ctc_weight": 1.0}
    exported = yaml.safe_load((output_dir / "exp" / "asr_whole_model_0.60_pruned" / "config.yaml").read_text())
    assert "pruning" not in exported["model_conf"] and exported["encoder"] == "pruned_transformer"
    assert whole["metric"] == "macs" and whole["predicted_latency_ratio"] is None
    # Its exported ratio is of the whole decode's MACs, counted here independently: the frontend (the
    # report's), the encoder's linear input layer on every frame, the CTC layer on every frame and its
    # prefix scoring at CTC weight 1 (every token of the vocabulary, 2 MACs per frame, per hypothesis and
    # output token).
    arch = json.loads((output_dir / "exp" / "asr_ssl_standin" / "ssl_encoder.json").read_text())
    frames = round(TINY["reference_seconds"] * 16000)
    for _, kernel, stride in arch["conv_layers"]:
        frames = (frames - kernel) // stride + 1
    vocabulary = len((output_dir / "data" / "token_list" / "char" / "tokens.txt").read_text().split())
    width, tokens = trained["encoder_conf"]["output_size"], 18.0 * TINY["reference_seconds"]
    fixed = frames * width * width + frames * width * vocabulary + 2 * tokens * TINY["beam_size"] * vocabulary * frames
    assert whole["exported_ratio"]["total"] == pytest.approx((whole["macs"] + fixed) / (dense["macs"] + fixed),
                                                             abs=1e-4)

    # The latency budget: a table of the stand-in's encoder profiled in the run on this CPU, its ratio
    # predicted by the export report.
    trained = yaml.safe_load((output_dir / "exp" / "asr_hj_latency_0.60" / "config.yaml").read_text())
    pruning = trained["frontend_conf"]["pruning"]
    assert (pruning["metric"], pruning["target"]) == ("latency", 0.6)
    table = json.loads(Path(pruning["latency_table"]).read_text())
    assert pruning["latency_table"] == results["latency"]["latency_table"]
    assert table["measured_on"]["seconds"] == TINY["reference_seconds"] and table["measured_on"]["threads"] == 1
    assert table["measured_on"]["batch"] == 1 and table["measured_on"]["device"] == "cpu"
    assert latency["metric"] == "latency"
    assert latency["predicted_latency_ratio"] == pytest.approx(latency["exported_ratio"]["total"], abs=1e-4)
    report = (output_dir / "RESULTS.md").read_text()
    assert "Budgets and measured latency" in report
    row = next(line.split() for line in report.splitlines() if line.split()[:2] == ["hj_latency_0.60", "latency"])
    assert row[1:] == ["latency", "0.600", "total", f"{latency['exported_ratio']['total']:.3f}",
                               f"{latency['predicted_latency_ratio']:.3f}",
                               f"{latency['frontend_latency_ratio']:.3f}", f"{latency['latency_ratio']:.3f}"]
