"""The LM pruning choices live in one light module that lm_prune and the demo both use."""

import subprocess
import sys

from espnet_prune.lm import choices


def test_the_choices_module_imports_neither_torch_nor_espnet():
    code = ("import sys; import espnet_prune.lm.choices; "
            "print(sorted(name for name in ('torch', 'espnet2') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_lm_prune_offers_exactly_these_choices_and_names_targets_with_them():
    from espnet_prune.bin import lm_prune
    from espnet_prune.lm import criteria, methods, schedulers

    parser = lm_prune.get_parser()
    offered = {action.dest: tuple(action.choices) for action in parser._actions if action.choices}
    assert offered["criterion"] == choices.CRITERIA == criteria.CRITERIA
    assert offered["method"] == choices.METHODS == methods.METHODS
    assert offered["scheduler"] == choices.SCHEDULERS == schedulers.SCHEDULERS
    assert lm_prune.target_name is choices.target_name
    assert [choices.target_name(t) for t in (0.5, 0.25, 0.125, 0.7)] == [
        "target0.50", "target0.25", "target0.125", "target0.70"]
