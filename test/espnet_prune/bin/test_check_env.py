"""``python -m espnet_prune --check`` and the lock it compares against."""

import io
import subprocess
import sys

import pytest

from espnet_prune.bin import check_env
from espnet_prune.bin.check_env import Piece, check, read_constraints


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
def test_the_environment_passes_the_check_through_the_launcher():
    result = subprocess.run([sys.executable, "-m", "espnet_prune", "--check"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    names = [line.split()[1] for line in lines[:-1]]
    assert names[:3] == ["torch", "torchaudio", "espnet"]
    torchaudio = next(line for line in lines if line.split()[1] == "torchaudio")
    assert torchaudio.startswith("ok") and "compiled extension loaded" in torchaudio
    assert lines[-1].startswith("espnet_prune --check: ok")
    assert "Flash Attention" not in result.stdout  # ESPnet's import-time notice goes to stderr


@pytest.mark.parametrize("distribution", ["torch", "torchaudio", "espnet", "espnet-s3prl", "transformers"])
def test_installed_versions_are_the_locked_ones(distribution):
    """`make env` installs with the lock as constraints: the key packages must be exactly those tested."""
    import importlib.metadata

    pins = read_constraints()
    assert distribution in pins, f"{distribution} is not pinned in {check_env.CONSTRAINTS_FILE}"
    assert importlib.metadata.version(distribution) == pins[distribution]


def test_the_lock_pins_every_line_and_excludes_the_broken_torchaudio():
    lines = [line for line in check_env.CONSTRAINTS_FILE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all("==" in line for line in lines), [line for line in lines if "==" not in line]
    pins = read_constraints()
    assert not (pins["torch"] == "2.12.1" and pins["torchaudio"] == "2.11.1")


def _raise(error):
    def load():
        raise error

    return load


def test_a_broken_required_piece_fails_with_the_package_and_the_fix():
    out = io.StringIO()
    pieces = [
        Piece("torch", "torch", lambda: "", True, "everything"),
        Piece("torchaudio", "torchaudio", _raise(OSError("libtorchaudio.so: undefined symbol: x")), True, "audio"),
    ]
    installed = check_env._version("torchaudio")
    problems = check(pieces, pins={"torchaudio": "9.9.9"}, out=out)
    lines = out.getvalue().splitlines()
    assert problems == 1
    assert lines[0].startswith("ok") and lines[0].split()[1] == "torch"
    assert lines[1].startswith("FAIL") and "undefined symbol" in lines[1]
    expected_fix = f"torchaudio {installed} does not load with torch {check_env._version('torch')}: " \
                   "install torchaudio==9.9.9"
    assert expected_fix in lines[1]
    assert lines[-1].startswith("espnet_prune --check: 1 problem(s): torchaudio: " + expected_fix)


def test_a_missing_optional_piece_is_reported_but_does_not_fail():
    out = io.StringIO()
    pieces = [Piece("onnx thing", "no-such-distribution", _raise(ImportError("No module named 'x'")), False,
                    "exporting", "pip install x")]
    assert check(pieces, pins={}, out=out) == 0
    line = out.getvalue().splitlines()[0]
    assert line.startswith("missing") and "optional, for exporting" in line and "pip install x" in line


def test_main_exit_status_follows_the_failures(monkeypatch, capsys):
    monkeypatch.setattr(check_env, "PIECES", [Piece("x", None, _raise(RuntimeError("broken")), True, "y", "fix it")])
    assert check_env.main([]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "espnet_prune --check: 1 problem(s): x: fix it"
    monkeypatch.setattr(check_env, "PIECES", [Piece("x", None, lambda: "fine", True, "y")])
    assert check_env.main([]) == 0
