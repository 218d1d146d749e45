"""Fixtures of the LM pruning tests: the tiny trained LM experiment and its loaded form."""

import pytest

from espnet_prune.lm.data import text_batches
from espnet_prune.lm.experiment import load_lm_experiment
from test.espnet_prune.lm.tiny_lm import one_torch_thread, tiny_lm  # noqa: F401  (fixtures)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_per_module(one_torch_thread):  # noqa: F811
    """Every LM test module runs with one torch thread (see ``one_torch_thread``)."""


class DenseLM:
    """The tiny experiment loaded for pruning: ``model`` (ESPnet LM around a
    ``PrunedTransformerLM``, eval mode; tests must not modify it), ``train_args``,
    ``config``, ``params`` (dense count) and batch factories over its texts."""

    def __init__(self, experiment):
        self.experiment = experiment
        self.model, self.train_args, self.config = load_lm_experiment(
            str(experiment.config), str(experiment.model_file)
        )
        self.params = self.model.lm.num_params()

    def train_batches(self, max_batches=8):
        return text_batches(self.train_args, str(self.experiment.train_text), 16, max_batches)

    def heldout_batches(self):
        return text_batches(self.train_args, str(self.experiment.test_text), 16)


@pytest.fixture(scope="session")
def dense_lm(tiny_lm) -> DenseLM:  # noqa: F811
    return DenseLM(tiny_lm)
