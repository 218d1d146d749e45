"""PrunedTransformerLM: dense equivalence, lm_conf checks, loading through ESPnet's registry."""

import pytest
import torch
from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.beam_search import BeamSearch
from espnet2.lm.transformer_lm import TransformerLM
from espnet2.tasks.lm import LMTask

from espnet_prune import register
from espnet_prune.lm.experiment import save_lm_experiment
from espnet_prune.lm.methods import prune_step
from espnet_prune.lm.pruned_transformer_lm import PrunedTransformerLM, matrix_names

CONF = dict(embed_unit=24, att_unit=32, head=4, unit=48, layer=2)
VOCAB = 30


def beam_scores(lm, ys, steps):
    """Log-probs of ``steps`` consecutive batch_score calls on prefixes of ys (n, T)."""
    states, outputs = [None] * len(ys), []
    for t in range(1, steps + 1):
        logp, states = lm.batch_score(ys[:, :t], states, None)
        outputs.append(logp)
    return torch.stack(outputs)


def lm_only_nbest(lm, search_class):
    """N-best of an LM-only beam search of 6 tokens (shallow fusion with no ASR scorer)."""
    search = search_class(
        scorers={"lm": lm}, weights={"lm": 1.0}, beam_size=3, vocab_size=VOCAB, sos=VOCAB - 1, eos=VOCAB - 1
    )
    return [(h.yseq.tolist(), float(h.score)) for h in search(torch.zeros(6, 4), maxlenratio=-6)]


def single_scores(lm, y, steps):
    state, outputs = None, []
    for t in range(1, steps + 1):
        logp, state = lm.score(y[:t], state, None)
        outputs.append(logp)
    return torch.stack(outputs)


@pytest.mark.parametrize("pos_enc", [None, "sinusoidal"])
def test_dense_transformer_checkpoint_loads_and_scores_identically(pos_enc):
    torch.manual_seed(0)
    dense = TransformerLM(VOCAB, pos_enc=pos_enc, **CONF).eval()
    pruned = PrunedTransformerLM(VOCAB, pos_enc=pos_enc, **CONF).eval()
    pruned.load_state_dict(dense.state_dict(), strict=True)
    assert pruned.num_params() == sum(p.numel() for p in dense.parameters())

    tokens = torch.randint(1, VOCAB - 1, (3, 9))
    assert torch.equal(dense(tokens, None)[0], pruned(tokens, None)[0])
    assert torch.equal(beam_scores(dense, tokens, 6), beam_scores(pruned, tokens, 6))
    assert torch.equal(single_scores(dense, tokens[0], 6), single_scores(pruned, tokens[0], 6))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(ranks={"encoder.encoders.5.feed_forward.w_1": 4}), "unknown matrices"),
        (dict(ranks={"decoder": 0}), "ranks must be >= 1"),
        (dict(ranks={"decoder": 4}, weight_masks=True), "cannot be combined"),
        (dict(layer_heads=[4]), "layer_heads"),
        (dict(layer_heads=[4, 5]), "layer_heads"),
        (dict(layer_units=[8, -1]), "layer_units"),
        (dict(pos_enc="rotary"), "pos_enc"),
    ],
)
def test_invalid_lm_conf_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        PrunedTransformerLM(VOCAB, **{**CONF, **overrides})


def test_lm_conf_rebuilds_the_same_structure():
    ranks = {"decoder": 5, "embed": 3, "encoder.encoders.1.self_attn.linear_v": 2}
    lm = PrunedTransformerLM(VOCAB, **CONF, layer_heads=[0, 3], layer_units=[0, 7], ranks=ranks)
    copy = PrunedTransformerLM(VOCAB, **lm.lm_conf)
    assert {k: v.shape for k, v in copy.state_dict().items()} == {
        k: v.shape for k, v in lm.state_dict().items()
    }
    assert list(copy.lm_conf["ranks"]) == [n for n in matrix_names(2) if n in ranks]
    # Layers without heads / FFN units still run (their sublayers give the output bias).
    logits, _ = lm(torch.randint(1, VOCAB - 1, (2, 5)), None)
    assert logits.shape == (2, 5, VOCAB) and torch.isfinite(logits).all()


@pytest.mark.parametrize("method", ["unstructured", "structured", "lowrank"])
def test_saved_experiment_loads_through_registry_like_asr_inference(dense_lm, tmp_path, method):
    pruned = prune_step(dense_lm.model, method, "magnitude", dense_lm.params // 2, dense_lm.train_batches)
    config_path, model_path = save_lm_experiment(pruned, dense_lm.config, tmp_path / method)

    register()
    loaded, train_args = LMTask.build_model_from_file(config_path, model_path, "cpu")
    loaded.eval()
    assert train_args.lm == "pruned_transformer"
    assert isinstance(loaded.lm, PrunedTransformerLM)
    assert loaded.lm.lm_conf == pruned.lm.lm_conf
    assert loaded.lm.num_params() == pruned.lm.num_params()

    tokens = torch.randint(1, VOCAB - 1, (4, 8))
    torch.testing.assert_close(beam_scores(loaded.lm, tokens, 7), beam_scores(pruned.lm, tokens, 7), rtol=0, atol=0)
    torch.testing.assert_close(
        single_scores(loaded.lm, tokens[1], 7), single_scores(pruned.lm, tokens[1], 7), rtol=0, atol=0
    )
    # ESPnet's beam searches (as asr_inference runs them) accept it as the "lm" scorer.
    nbest = lm_only_nbest(loaded.lm, BatchBeamSearch)
    assert nbest == lm_only_nbest(pruned.lm, BatchBeamSearch)
    assert [y for y, _ in nbest] == [y for y, _ in lm_only_nbest(loaded.lm, BeamSearch)]
