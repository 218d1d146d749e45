"""Pruning methods × criteria: sizes, physical removal, exact factorisation, data-driven
factorisation quality, unstructured masks through save / load / fine-tuning."""

import copy

import pytest
import torch
from espnet2.tasks.lm import LMTask

from espnet_prune import register
from espnet_prune.lm.criteria import collect_input_statistics
from espnet_prune.lm.experiment import save_lm_experiment
from espnet_prune.lm.finetune import EspnetFinetuner
from espnet_prune.lm.layers import LowRankEmbedding, LowRankLinear, MaskedEmbedding, MaskedLinear, effective_weight
from espnet_prune.lm.lowrank import factorise, prune_lowrank, truncate, weighted_svd
from espnet_prune.lm.methods import prune_step
from espnet_prune.lm.report import perplexity
from espnet_prune.lm.structured import remove_units

TARGETS = (0.75, 0.5, 0.25)


def logits(lm, tokens):
    return lm.eval()(tokens, None)[0]


def beam_logp(lm, tokens, steps=6):
    states, out = [None] * len(tokens), []
    for t in range(1, steps + 1):
        logp, states = lm.eval().batch_score(tokens[:, :t], states, None)
        out.append(logp)
    return torch.stack(out)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(1, 29, (3, 10), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("criterion", ["magnitude", "data"])
@pytest.mark.parametrize("method", ["unstructured", "structured", "lowrank"])
def test_every_method_lands_within_two_percent_of_each_target(dense_lm, method, criterion):
    dense_ppl = perplexity(dense_lm.model, dense_lm.heldout_batches())
    for target in TARGETS:
        target_params = round(target * dense_lm.params)
        pruned = prune_step(dense_lm.model, method, criterion, target_params, dense_lm.train_batches)
        lm = pruned.lm
        assert abs(lm.num_params() - target_params) <= 0.02 * target_params, (target, lm.num_params())
        stored = sum(p.numel() for p in lm.parameters())
        modules = list(lm.modules())
        if method == "unstructured":
            masks = [m.weight_mask for m in modules if isinstance(m, (MaskedLinear, MaskedEmbedding))]
            assert len(masks) == len(lm.matrices())
            assert stored == dense_lm.params  # same shapes, weights masked
            assert stored - lm.num_params() == sum(int((mask == 0).sum()) for mask in masks)
        elif method == "structured":
            assert stored == lm.num_params() < dense_lm.params  # physically smaller
            assert not lm.conf["ranks"] and not lm.conf["weight_masks"]
        else:
            assert stored == lm.num_params()
            assert any(isinstance(m, (LowRankLinear, LowRankEmbedding)) for m in modules)
            assert not lm.conf["weight_masks"]
        ppl = perplexity(pruned, dense_lm.heldout_batches())
        assert dense_ppl * 0.5 < ppl < float("inf")


def test_structured_removal_computes_what_zeroed_units_compute(dense_lm, tokens):
    lm = dense_lm.model.lm
    keep = {
        ("embed", -1): torch.arange(0, 32, 2),
        ("heads", 0): torch.tensor([1, 3]),
        ("units", 0): torch.arange(50),
        ("heads", 1): torch.tensor([], dtype=torch.long),  # whole attention sublayer
        ("units", 1): torch.arange(0, 128, 3),
    }
    compact = remove_units(lm, keep)
    assert compact.lm_conf["layer_heads"] == [2, 0]
    assert compact.lm_conf["layer_units"] == [50, 43]
    assert compact.lm_conf["embed_unit"] == 16
    assert compact.num_params() == sum(p.numel() for p in compact.parameters())

    zeroed = copy.deepcopy(lm)
    with torch.no_grad():
        dropped = torch.ones(32, dtype=torch.bool)
        dropped[keep[("embed", -1)]] = False
        zeroed.embed.weight[:, dropped] = 0
        for layer in range(2):
            block = zeroed.encoder.encoders[layer]
            heads = torch.ones(4, dtype=torch.bool)
            heads[keep[("heads", layer)]] = False
            block.self_attn.linear_out.weight[:, heads.repeat_interleave(8)] = 0
            units = torch.ones(128, dtype=torch.bool)
            units[keep[("units", layer)]] = False
            block.feed_forward.w_2.weight[:, units] = 0
    torch.testing.assert_close(logits(compact, tokens), logits(zeroed, tokens), rtol=0, atol=1e-5)
    torch.testing.assert_close(beam_logp(compact, tokens), beam_logp(zeroed, tokens), rtol=0, atol=1e-5)


def test_lowrank_after_structured_removal_skips_empty_sublayers(dense_lm, tokens):
    keep = {("heads", 1): torch.tensor([], dtype=torch.long), ("units", 0): torch.tensor([], dtype=torch.long)}
    compact = remove_units(dense_lm.model.lm, keep)
    target = compact.num_params() // 2
    factorised = prune_lowrank(compact, target)
    assert abs(factorised.num_params() - target) <= 0.02 * target
    assert "encoder.encoders.1.self_attn.linear_q" not in factorised.lm_conf["ranks"]
    assert torch.isfinite(logits(factorised, tokens)).all()


@pytest.mark.parametrize("criterion", ["magnitude", "data"])
def test_full_rank_factorisation_reproduces_dense_scores(dense_lm, tokens, criterion):
    lm = dense_lm.model.lm
    statistics = None
    if criterion == "data":
        statistics = collect_input_statistics(lm, dense_lm.train_batches(), dense_lm.model.eos)
    full_ranks = {name: min(effective_weight(m).shape) for name, m in lm.matrices().items()}
    factorised = factorise(lm, full_ranks, statistics)
    assert all(isinstance(m, (LowRankLinear, LowRankEmbedding)) for m in factorised.matrices().values())
    torch.testing.assert_close(logits(factorised, tokens), logits(lm, tokens), rtol=0, atol=1e-5)
    torch.testing.assert_close(beam_logp(factorised, tokens), beam_logp(lm, tokens), rtol=0, atol=1e-5)


def test_data_driven_factorisation_has_lower_heldout_output_error_than_svd(dense_lm):
    """Same rank (half of full) for every matrix; error = mean ‖(W - W_r) x‖² over the
    held-out text's activations (= tr(ΔW S_heldout ΔWᵀ))."""
    lm = dense_lm.model.lm
    train = collect_input_statistics(lm, dense_lm.train_batches(), dense_lm.model.eos)
    heldout = collect_input_statistics(lm, dense_lm.heldout_batches(), dense_lm.model.eos)
    totals = {"svd": 0.0, "data": 0.0}
    for name, module in lm.matrices().items():
        weight = effective_weight(module).double()
        rank = min(weight.shape) // 2
        moment = heldout.second_moments[name]
        moment = torch.diag(moment) if moment.dim() == 1 else moment
        errors = {}
        for kind, train_moment in (("svd", None), ("data", train.second_moments[name])):
            up, down = truncate(*weighted_svd(weight, train_moment), rank)
            delta = weight - up @ down
            errors[kind] = float(torch.trace(delta @ moment @ delta.t()))
            totals[kind] += errors[kind]
        assert errors["data"] < errors["svd"], (name, errors)
    assert totals["data"] < 0.5 * totals["svd"], totals


def test_unstructured_masks_survive_save_load_and_finetuning(dense_lm, tmp_path, tokens):
    pruned = prune_step(dense_lm.model, "unstructured", "data", dense_lm.params // 2, dense_lm.train_batches)
    masks = {name: m.weight_mask.clone() for name, m in pruned.lm.matrices().items()}
    assert all(float(mask.mean()) < 0.9 for mask in masks.values())

    config_path, model_path = save_lm_experiment(pruned, dense_lm.config, tmp_path / "saved")
    register()
    loaded, _ = LMTask.build_model_from_file(config_path, model_path, "cpu")
    for name, module in loaded.lm.matrices().items():
        assert torch.equal(module.weight_mask, masks[name]), name
    assert loaded.lm.num_params() == pruned.lm.num_params()
    torch.testing.assert_close(logits(loaded.lm, tokens), logits(pruned.lm, tokens), rtol=0, atol=0)

    finetuner = EspnetFinetuner(
        base_config=dense_lm.config,
        train_args=dense_lm.train_args,
        train_text=str(dense_lm.experiment.train_text),
        valid_text=str(dense_lm.experiment.valid_text),
        work_dir=tmp_path / "finetune",
        steps=10,
        lr=0.01,
        batch_size=16,
    )
    finetuned = finetuner(loaded, "step01")
    trained_config = (tmp_path / "finetune" / "step01" / "train" / "config.yaml").read_text()
    assert "lm: pruned_transformer" in trained_config and "weight_masks: true" in trained_config

    changed, kept = 0, 0
    for name, module in finetuned.lm.matrices().items():
        mask = masks[name]
        assert torch.equal(module.weight_mask, mask), name
        assert torch.all(module.weight[mask == 0] == 0), name  # pruned weights stayed zero
        before = pruned.lm.matrices()[name].weight
        changed += int((module.weight[mask == 1] != before[mask == 1]).sum())
        kept += int(mask.sum())
    assert changed > 0.5 * kept  # the kept weights were trained
    assert finetuned.lm.num_params() == pruned.lm.num_params()
