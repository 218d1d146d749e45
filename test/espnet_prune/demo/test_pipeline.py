"""The composed demo: the plan of each mode ends with the report after every other step, and the
package's modules import each other in one direction only (no cycle), the light ones without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import espnet_prune.demo
from espnet_prune.demo import pipeline
from espnet_prune.demo.layout import DemoPaths
from espnet_prune.demo.recipe import DemoRecipe
from espnet_prune.demo.settings import SIZES, DemoSettings
from test.espnet_prune.demo.recorder import Recorder

PACKAGE = Path(espnet_prune.demo.__file__).parent
#: Modules the demo's own process imports before any step runs: no torch, no ESPnet.
LIGHT = ("settings", "layout", "steps", "recipe", "direct_mode", "recipe_mode", "pipeline")


def module_imports(path: Path):
    """The ``espnet_prune.demo.*`` modules that ``path`` imports anywhere (inside functions and
    ``if TYPE_CHECKING:`` too: a cycle through a deferred import is still a cycle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name.split(".")[2] for name in names
                  if name.startswith("espnet_prune.demo.") and (PACKAGE / f"{name.split('.')[2]}.py").is_file()}
    return found


def import_cycle(graph):
    """One cycle of ``graph`` (module -> modules it imports) as a list, or ``None``."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state:
                cycle = visit(other)
                if cycle:
                    return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_demo_package_has_no_import_cycle_and_data_flows_one_way():
    graph = {path.stem: module_imports(path) - {path.stem} for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert import_cycle(graph) is None, graph
    assert graph["settings"] == set() and graph["layout"] == {"settings"}
    assert graph["steps"] == {"settings"}
    for module in ("settings", "layout", "steps", "recipe", "direct_mode", "recipe_mode", "report"):
        assert "pipeline" not in graph[module], module
    assert {"direct_mode", "recipe_mode", "report"} <= graph["pipeline"]


def test_the_light_modules_import_neither_torch_nor_espnet():
    code = ("import sys\n" + "".join(f"import espnet_prune.demo.{name}\n" for name in LIGHT)
            + "import espnet_prune.bin.demo\n"
            + "print(sorted(name for name in ('torch', 'espnet2') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("task", ["asr", "slu"])
def test_the_plan_ends_with_the_report_after_every_other_step(tmp_path, task):
    recipe = DemoRecipe(DemoSettings(**dict(SIZES["tiny"], task=task)), DemoPaths(tmp_path, task), progress=Recorder())
    steps = pipeline.plan(recipe)
    names = [step.name for step in steps]
    assert len(set(names)) == len(names) and names[-2:] == ["score", "report"]
    assert set(steps[-1].after) == set(names[:-1])
    assert ("lm_perplexity" in names) == (task == "asr")


def test_recipe_mode_is_planned_when_an_espnet_checkout_is_given(tmp_path):
    recipe = DemoRecipe(DemoSettings(**SIZES["tiny"]), DemoPaths(tmp_path, "asr"), espnet_root=tmp_path,
                        progress=Recorder())
    steps = pipeline.plan(recipe)
    assert steps[0].name == "setup" and steps[-1].name == "report"
    assert "train_decode_dense" in [step.name for step in steps]
