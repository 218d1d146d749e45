"""No module of the package imports one above it (issue 23): ``ssl/`` is the SSL encoder alone
(no ESPnet, nothing of pruning/asr/slu/demo/bin), ``pruning/`` knows no task, recipe or CLI, and
``export/`` (the compact models and their reports, which the demo reads) imports neither ``demo/`` nor
``bin/``, and only ``bin/`` and ``__main__`` import ``bin/``. Imports inside functions count too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "espnet_prune"
RULES = {
    "ssl": ("espnet", "espnet2", "espnet_prune.pruning", "espnet_prune.asr", "espnet_prune.slu", "espnet_prune.demo",
            "espnet_prune.bin"),
    "pruning": ("espnet_prune.asr", "espnet_prune.slu", "espnet_prune.demo", "espnet_prune.bin"),
    "export": ("espnet_prune.demo", "espnet_prune.bin"),
}


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def forbidden(path: Path, package: Path = PACKAGE):
    relative = path.relative_to(package).as_posix()
    top = relative.split("/")[0]
    banned = RULES.get(top, ())
    if top not in ("bin", "__main__.py"):
        banned = banned + ("espnet_prune.bin",)
    return [module for module in imported_modules(path)
            if any(module == prefix or module.startswith(prefix + ".") for prefix in banned)]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_imports_one_above_it(path):
    assert forbidden(path) == []


def test_the_rule_catches_an_upward_import(tmp_path):
    """The check itself: an ssl module importing ESPnet or the controller is caught."""
    fake = tmp_path / "espnet_prune"
    (fake / "ssl").mkdir(parents=True)
    module = fake / "ssl" / "bad.py"
    module.write_text("import espnet2.tasks.asr\n\ndef f():\n    from espnet_prune.pruning.controller import X\n")
    assert forbidden(module, fake) == ["espnet2.tasks.asr", "espnet_prune.pruning.controller"]
