"""Index selection of pruned units between producers and consumers, in a state dict."""

import torch
from torch import nn

from espnet_prune.layers.unit_selection import head_rows, keep_units


def test_head_rows_are_the_kept_heads_blocks():
    assert head_rows(torch.tensor([0, 2]), 3).tolist() == [0, 1, 2, 6, 7, 8]
    assert head_rows(torch.tensor([], dtype=torch.long), 4).tolist() == []


def test_kept_units_compute_what_the_masked_pair_computes():
    torch.manual_seed(0)
    first, second = nn.Linear(5, 6), nn.Linear(6, 4, bias=False)
    mask = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.25])
    kept = mask.nonzero().squeeze(1)
    state = {f"first.{k}": v for k, v in first.state_dict().items()}
    state.update({f"second.{k}": v for k, v in second.state_dict().items()})
    keep_units(state, kept, producers=["first", "absent"], consumers=["second"], mask=mask)
    assert state["first.weight"].shape == (4, 5) and state["first.bias"].shape == (4,)
    assert state["second.weight"].shape == (4, 4)
    x = torch.randn(3, 5)
    expected = second(torch.relu(first(x)) * mask)
    got = torch.relu(x @ state["first.weight"].T + state["first.bias"]) @ state["second.weight"].T
    torch.testing.assert_close(got, expected)


def test_convolution_channels_and_consumers_without_producers():
    state = {"conv.weight": torch.randn(4, 2, 3), "next.weight": torch.randn(5, 4, 2),
             "embed.weight": torch.randn(7, 4)}
    before = {k: v.clone() for k, v in state.items()}
    keep_units(state, torch.tensor([1, 3]), producers=["conv"], consumers=["next", "embed"])
    assert torch.equal(state["conv.weight"], before["conv.weight"][[1, 3]])
    assert torch.equal(state["next.weight"], before["next.weight"][:, [1, 3]])
    assert torch.equal(state["embed.weight"], before["embed.weight"][:, [1, 3]])
