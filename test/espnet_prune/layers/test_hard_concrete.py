import math

import pytest
import torch

from espnet_prune.layers.hard_concrete import HardConcreteGate


def test_keep_prob_matches_closed_form_and_monte_carlo():
    torch.manual_seed(0)
    gate = HardConcreteGate(5, init_noise=0.0)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
    beta, low, high = 2.0 / 3.0, -0.1, 1.1
    closed = torch.sigmoid(gate.log_alpha - beta * math.log(-low / high))
    assert torch.allclose(gate.keep_prob(), closed)
    samples = torch.stack([gate.sample() for _ in range(20000)])
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    empirical = (samples > 0).float().mean(0)
    assert torch.allclose(empirical, closed.detach(), atol=0.015)
    # The stretch makes exact zeros and ones both likely.
    assert (samples == 0).any() and (samples == 1).any()


def test_init_keep_prob_is_respected():
    gate = HardConcreteGate(1000, init_keep_prob=0.7, init_noise=0.0)
    assert torch.allclose(gate.keep_prob(), torch.full((1000,), 0.7), atol=1e-5)


def test_sample_is_differentiable():
    gate = HardConcreteGate(8)
    gate.sample().sum().backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0


def test_deterministic_mask_keeps_expected_count_with_largest_log_alpha():
    gate = HardConcreteGate(6, init_noise=0.0)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([4.0, -4.0, 2.0, -2.0, 0.5, -6.0]))
    expected = int(round(float(gate.keep_prob().detach().sum())))
    gate.eval()
    mask = gate()
    assert int((mask > 0).sum()) == expected == 3
    assert set(mask.nonzero().squeeze(1).tolist()) == {0, 2, 4}
    # Kept units carry E[z], estimated here by Monte Carlo.
    torch.manual_seed(0)
    gate.train()
    monte_carlo = torch.stack([gate.sample() for _ in range(40000)]).mean(0)
    assert torch.allclose(mask[[0, 2, 4]], monte_carlo[[0, 2, 4]].detach(), atol=0.01)
    gate.eval()
    assert torch.equal(mask, gate())  # deterministic


def test_min_keep_holds_when_everything_wants_pruning():
    gate = HardConcreteGate(4, min_keep=1, init_noise=0.0)
    with torch.no_grad():
        gate.log_alpha.fill_(-10.0)
        gate.log_alpha[2] = -9.0
    gate.eval()
    assert gate.num_kept() == 1
    mask = gate()
    assert mask.nonzero().squeeze(1).tolist() == [2]
    assert 0.0 < mask[2].item() < 0.01


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_units=0), "at least one unit"),
    (dict(num_units=3, stretch_low=0.1), "stretch_low"),
    (dict(num_units=3, init_keep_prob=1.0), "init_keep_prob"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HardConcreteGate(**kwargs)
