"""``python -m espnet_prune``: behaves like ``python3`` with the plugin registered.

stdout must be exactly the program's: asr.sh/slu.sh paste the stdout of
``espnet2.bin.tokenize_text --output -`` into the ``ref.trn``/``hyp.trn`` that sclite scores,
so these tests compare whole stdout, never only its last line.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from espnet_prune import REGISTRATIONS, register


def launch(*args, cwd=None, input=None):
    return subprocess.run([sys.executable, "-m", "espnet_prune", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, input=input)


def test_register_is_idempotent_and_covers_every_registration():
    first = register()
    second = register()
    assert first == second
    for task_module, registry_name, choice, _ in REGISTRATIONS:
        assert choice in first[f"{task_module}.{registry_name}"]
    from espnet2.tasks.abs_task import AbsTask

    assert getattr(AbsTask.build_optimizers.__func__, "espnet_prune_wrapper", False)


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
def test_code_mode_passes_arguments_and_sees_the_registry():
    result = launch("-c",
                    "import sys, espnet2.tasks.slu as t; print(sys.argv, 'pruned_espnet' in t.model_choices.classes)",
                    "a", "--b")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['-c', 'a', '--b'] True\n"


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
def test_script_mode_runs_the_file_as_main(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import sys\nif __name__ == '__main__':\n    print(sys.argv)\n    sys.exit(3)\n")
    result = launch(str(script), "x", "y")
    assert result.returncode == 3
    assert result.stdout == f"[{str(script)!r}, 'x', 'y']\n"


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
def test_module_mode_and_spawned_workers_see_the_registry():
    """ESPnet's multi-GPU training spawns its workers; they must see our classes too."""
    result = launch("-m", "test.espnet_prune.spawn_probe", "--flag", "1", cwd=str(Path(__file__).parents[2]))
    assert result.returncode == 0, result.stderr
    # The child writes to the same stdout: whatever it printed while registering would show here.
    assert result.stdout == "parent=True child=True argv=['--flag', '1']\n"


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
@pytest.mark.parametrize("token_type, text, expected", [
    ("word", "u1 HELLO WORLD\nu2 GOOD BYE\n", "HELLO WORLD\nGOOD BYE\n"),
    ("char", "u1 HI YOU\n", "H I <space> Y O U\n"),
])
def test_tokenize_text_stdout_is_exactly_espnets(token_type, text, expected):
    """asr.sh/slu.sh stage 13: ``tokenize_text -f 2- --input - --output -`` becomes ref.trn/hyp.trn."""
    result = launch("-m", "espnet2.bin.tokenize_text", "-f", "2-", "--input", "-", "--output", "-",
                    "--token_type", token_type, input=text)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert "Flash Attention" in result.stderr  # ESPnet's import-time notice still reaches the user


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
def test_import_time_prints_go_to_stderr_but_the_programs_own_prints_do_not(tmp_path):
    (tmp_path / "noisy_module.py").write_text("print('import-time noise')\n")
    script = tmp_path / "prog.py"
    script.write_text("import sys\nsys.path.insert(0, sys.argv[1])\nprint('before')\nimport noisy_module\n"
                      "print('after')\n")
    result = launch(str(script), str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "before\nafter\n"
    assert "import-time noise" in result.stderr


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
def test_module_mode_exit_status_and_print_config():
    result = launch("-m", "espnet2.bin.asr_train", "--print_config", "--frontend", "pruned_ssl", "--model",
                    "pruned_espnet")
    assert result.returncode == 0, result.stderr
    for key in ("frontend: pruned_ssl", "checkpoint: null", "multilayer_feature: false", "pruning: null",
                "model: pruned_espnet"):
        assert key in result.stdout


@pytest.mark.slow  # a launcher subprocess
@pytest.mark.parametrize("args, message", [((), "usage"), (("-m",), "needs a module"), (("-c",), "needs code"),
                                           (("-X", "y"), "unsupported")])
def test_bad_invocations_explain_themselves(args, message):
    result = launch(*args)
    assert result.returncode != 0
    assert message in result.stderr
    # They fail before registering, i.e. without importing ESPnet (whose import prints this notice).
    assert "Flash Attention" not in result.stderr


@pytest.mark.parametrize("name, message", [
    ("no.such.module", "espnet_prune: No module named no.such.module"),  # no parent package
    ("json.no_such_module", "espnet_prune: No module named json.no_such_module"),  # the parent exists
    ("json.decoder.x", "espnet_prune: No module named json.decoder.x"),  # the parent is a module
    ("json", "espnet_prune: No module named json.__main__; 'json' is a package and cannot be directly executed"),
    ("broken_package_for_test.module", "espnet_prune: Error while finding module specification for "
                                       "'broken_package_for_test.module' (ModuleNotFoundError: No module named "
                                       "'missing_dependency_for_test')"),
])
def test_a_module_that_cannot_run_is_one_line(name, message, tmp_path, monkeypatch):
    from espnet_prune.__main__ import module_spec

    package = tmp_path / "broken_package_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("import missing_dependency_for_test\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        module_spec(name)
    assert exit_info.value.code == message
    assert module_spec("json.decoder").name == "json.decoder"
    assert module_spec("espnet_prune").name == "espnet_prune.__main__"


@pytest.mark.slow  # a launcher subprocess (imports ESPnet's tasks)
def test_missing_module_exits_with_one_line_and_no_traceback():
    result = launch("-m", "no.such.module")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "espnet_prune: No module named no.such.module"
    assert "Traceback" not in result.stderr
