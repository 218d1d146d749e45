"""The demo's recipe, composed: every step of ESPnet's asr.sh / slu.sh stages and the report.

Two ways to run the same recipe (``egs2/espeak_demo/<task>1``, the same YAML configs):

- **direct** (ESPnet's egs2 TEMPLATE is absent, as when ESPnet comes from PyPI): the stages
  of ``asr.sh`` run as the very ESPnet binaries ``asr.sh`` calls, in its order
  (:mod:`~espnet_prune.demo.direct_mode`);
- **recipe** (``ESPNET_ROOT`` names an ESPnet checkout): the recipe directory is set up with
  ``egs2/TEMPLATE_prune/setup.sh`` and ESPnet's own ``asr.sh`` / ``slu.sh`` run the stages,
  through ``egs2/TEMPLATE_prune/prune_stages.sh`` (:mod:`~espnet_prune.demo.recipe_mode`).

Around ESPnet's stages the demo adds its own: the *SSL stand-in* (a wav2vec2-architecture
model trained densely with CTC on the training set, whose encoder every system then
fine-tunes from, since no pretrained weights can be downloaded here), LM pruning
(``espnet_prune.bin.lm_prune``), export of compact models (``espnet_prune.bin.export``),
and the report (:mod:`~espnet_prune.demo.report`), which runs after every other step.

Independent work runs side by side (``jobs`` lanes, one CPU thread each by default,
:mod:`~espnet_prune.demo.steps`): the LM stages beside the ASR statistics and the stand-in's
training, the systems' fine-tuning, export and decoding two at a time. Each finished step
leaves a marker (``.done`` file), so running the demo again skips what is done.

The package's modules depend on each other in one direction: :mod:`~espnet_prune.demo.settings`
(what to run) -> :mod:`~espnet_prune.demo.layout` (where things are) ->
:mod:`~espnet_prune.demo.steps` (the scheduler) -> :mod:`~espnet_prune.demo.recipe` (the
recipe object) -> the two modes -> this module, which adds :mod:`~espnet_prune.demo.report`.
"""

from pathlib import Path
from typing import List

from espnet_prune.demo.direct_mode import direct_steps
from espnet_prune.demo.recipe import DemoRecipe
from espnet_prune.demo.recipe_mode import recipe_steps
from espnet_prune.demo.steps import Step, run_steps


def report_step(recipe: DemoRecipe, after: List[str]) -> Step:
    """Latency, ``results.json``, plot and table (:mod:`espnet_prune.demo.report`)."""

    def action() -> str:
        from espnet_prune.demo.report import write_report  # torch and ESPnet: only when it runs

        return str(write_report(recipe.settings, recipe.paths, recipe.threads, recipe.progress,
                                recipe.mode_description()))

    return Step("report", "report", action, after=tuple(after))


def plan(recipe: DemoRecipe) -> List[Step]:
    """Every step of the demo, for :func:`~espnet_prune.demo.steps.run_steps`: the stages of the
    mode (recipe mode with ``recipe.espnet_root``, else direct), then the report after all of them."""
    steps = recipe_steps(recipe) if recipe.espnet_root is not None else direct_steps(recipe)
    return steps + [report_step(recipe, [step.name for step in steps])]


def run_demo(recipe: DemoRecipe) -> Path:
    """Run every step of :func:`plan`; returns the path of ``results.json``."""
    run_steps(plan(recipe), recipe.lanes, recipe.progress)
    return recipe.paths.results
