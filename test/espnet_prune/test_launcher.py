"""``python -m espnet_prune``: behaves like ``python3`` with the plugin registered."""

import subprocess
import sys
from pathlib import Path

import pytest

from espnet_prune import REGISTRATIONS, register


def launch(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "espnet_prune", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_register_is_idempotent_and_covers_every_registration():
    first = register()
    second = register()
    assert first == second
    for task_module, registry_name, choice, _ in REGISTRATIONS:
        assert choice in first[f"{task_module}.{registry_name}"]
    from espnet2.tasks.abs_task import AbsTask

    assert getattr(AbsTask.build_optimizers.__func__, "espnet_prune_wrapper", False)


def test_code_mode_passes_arguments_and_sees_the_registry():
    result = launch("-c", "import sys, espnet2.tasks.slu as t; print(sys.argv, 'pruned_espnet' in t.model_choices.classes)",
                    "a", "--b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['-c', 'a', '--b'] True"


def test_script_mode_runs_the_file_as_main(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import sys\nif __name__ == '__main__':\n    print(sys.argv)\n    sys.exit(3)\n")
    result = launch(str(script), "x", "y")
    assert result.returncode == 3
    assert result.stdout.strip().splitlines()[-1] == f"[{str(script)!r}, 'x', 'y']"


def test_module_mode_and_spawned_workers_see_the_registry():
    """ESPnet's multi-GPU training spawns its workers; they must see our classes too."""
    result = launch("-m", "test.espnet_prune.spawn_probe", "--flag", "1", cwd=str(Path(__file__).parents[2]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "parent=True child=True argv=['--flag', '1']"


def test_module_mode_exit_status_and_print_config():
    result = launch("-m", "espnet2.bin.asr_train", "--print_config", "--frontend", "pruned_ssl", "--model",
                    "pruned_espnet")
    assert result.returncode == 0, result.stderr
    for key in ("frontend: pruned_ssl", "checkpoint: null", "multilayer_feature: false", "pruning: null",
                "model: pruned_espnet"):
        assert key in result.stdout


@pytest.mark.parametrize("args, message", [((), "usage"), (("-m",), "needs a module"), (("-X", "y"), "unsupported")])
def test_bad_invocations_explain_themselves(args, message):
    result = launch(*args)
    assert result.returncode != 0
    assert message in result.stderr
