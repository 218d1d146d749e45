"""Export never destroys another experiment and never exports a non-finite model.

The gated experiment is the one of ``test_export`` (ESPnet's ``asr_train`` writes its config);
the output directory is another ESPnet experiment whose averaged model is ESPnet's symlink
chain (``valid.loss.ave.pth`` -> ``valid.loss.ave_1best.pth`` -> ``2epoch.pth``).
"""

import contextlib
import subprocess
import sys

import pytest
import torch

from espnet_prune.export.experiment import export_experiment
from espnet_prune.utils.output_dir import OWNER_FILE
from test.espnet_prune.bin.test_export import MODEL, gated_experiment
from test.espnet_prune.utils.test_output_dir import espnet_experiment, snapshot


@pytest.fixture(scope="module")
def gated(tmp_path_factory, asr_corpus):
    work = tmp_path_factory.mktemp("export_safety")
    return work, gated_experiment("asr", work, asr_corpus)


def run_export(work, *args):
    return subprocess.run([sys.executable, "-m", "espnet_prune.bin.export", "--train_config",
                           "exp/asr_pruned/config.yaml", *args], cwd=work, capture_output=True, text=True)


@pytest.mark.slow
def test_export_into_another_experiment_is_refused_byte_for_byte(gated):
    work, exp = gated
    other = espnet_experiment(work / "exp" / "asr_other")
    before = snapshot(other)
    result = run_export(work, "--model_file", f"exp/asr_pruned/{MODEL}", "--output_dir", "exp/asr_other")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "refusing to write into exp/asr_other" in last and "valid.loss.ave.pth" in last, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(other) == before


@pytest.mark.slow
def test_export_may_rewrite_its_own_directory_and_leaves_the_rest(gated):
    work, exp = gated
    with contextlib.chdir(work):
        first = export_experiment(exp / "config.yaml", exp / MODEL, work / "exp" / "compact").reports[0].to_json()
        (work / "exp" / "compact" / "decode_test").mkdir()  # what asr.sh's stage 12 adds
        (work / "exp" / "compact" / "decode_test" / "text").write_text("u1 A\n")
        second = export_experiment(exp / "config.yaml", exp / MODEL, work / "exp" / "compact").reports[0].to_json()
    assert first["structure"] == second["structure"]
    assert (work / "exp" / "compact" / "decode_test" / "text").read_text() == "u1 A\n"
    assert sorted(p.name for p in (work / "exp" / "compact").iterdir()) == [
        OWNER_FILE, "config.yaml", "decode_test", "images", "valid.acc.ave.json", MODEL]


@pytest.mark.slow
def test_single_file_output_is_never_written_through_a_symlink(gated):
    work, exp = gated
    (work / "epoch.pth").write_bytes(b"an epoch")
    (work / "link.pth").symlink_to(work / "epoch.pth")
    result = run_export(work, "--model_file", f"exp/asr_pruned/{MODEL}", "--output", str(work / "link.pth"))
    assert result.returncode != 0 and "symlink" in result.stderr.strip().splitlines()[-1], result.stderr
    assert (work / "epoch.pth").read_bytes() == b"an epoch"


@pytest.mark.slow
def test_a_nan_weight_fails_export_naming_the_tensor(gated):
    work, exp = gated
    state = torch.load(exp / MODEL)
    name = next(key for key in state if key.endswith("q_proj.weight"))
    state[name][0, 0] = float("nan")
    torch.save(state, exp / "nan.pth")
    result = run_export(work, "--model_file", "exp/asr_pruned/nan.pth", "--output_dir", "exp/nan_compact",
                        "--onnx", "exp/nan.onnx")
    assert result.returncode != 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"tensor '{name}' has 1 non-finite" in last and "nan.pth" in last, result.stderr
    assert not (work / "exp" / "nan_compact").exists() and not (work / "exp" / "nan.onnx").exists()

