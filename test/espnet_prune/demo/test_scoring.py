"""Scoring without sclite: sclite's alignment, ESPnet's tokenisation and cleaning, intent accuracy."""

import random

import editdistance
import pytest

from espnet_prune.demo import scoring


def test_alignment_counts_substitutions_deletions_and_insertions():
    assert scoring.align_counts("a b c".split(), "a x c".split()) == (1, 0, 0)
    assert scoring.align_counts("a b c".split(), "a c".split()) == (0, 1, 0)
    assert scoring.align_counts("a c".split(), "a b c".split()) == (0, 0, 1)
    assert scoring.align_counts([], "a b".split()) == (0, 0, 2)
    assert scoring.align_counts("a b".split(), []) == (0, 2, 0)
    # sclite's weights (substitution 4, insertion/deletion 3): a deletion and an insertion (6)
    # beat two substitutions (8) when both need two edits.
    assert scoring.align_counts("a b".split(), "b c".split()) == (0, 1, 1)
    assert scoring.align_counts(list("kitten"), list("sitting")) == (2, 0, 1)


def test_alignment_minimises_sclites_weighted_cost_not_the_edit_count():
    rng = random.Random(0)
    for _ in range(300):
        ref = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        hyp = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        sub, dele, ins = scoring.align_counts(ref, hyp)
        assert len(ref) - dele + ins == len(hyp)
        assert sub + dele + ins >= editdistance.eval(ref, hyp)
        # A minimum-edit alignment costs at most 4 per edit, so sclite's optimum is not dearer.
        assert 4 * sub + 3 * (dele + ins) <= 4 * editdistance.eval(ref, hyp)
    # Five substitutions (cost 20) lose to three deletions and three insertions (cost 18), as in sclite.
    assert scoring.align_counts(list("aaabb"), list("bbcca")) == (0, 3, 3)
    assert editdistance.eval(list("aaabb"), list("bbcca")) == 5


def test_wer_and_cer_over_utterances():
    refs = {"u1": "turn on the light", "u2": "play some music", "u3": "tell me a joke"}
    hyps = {"u1": "turn of the light", "u2": "play music"}  # u3 has no hypothesis
    wer = scoring.error_rate(refs, hyps, "word")
    assert (wer.substitutions, wer.deletions, wer.insertions, wer.ref_tokens) == (1, 5, 0, 11)
    assert wer.rate == pytest.approx(6 / 11)
    cer = scoring.error_rate(refs, hyps, "char")
    # "on" -> "of": 1 substitution; "some " (5 chars with <space>) deleted; u3's 14 chars deleted.
    assert (cer.substitutions, cer.deletions, cer.insertions) == (1, 5 + 14, 0)
    assert cer.ref_tokens == len("turn on the light") + len("play some music") + len("tell me a joke")


def test_normalisation_is_espnets_case_insensitive_with_the_cleaner_on_references_only():
    refs = {"u1": "Dr. Smith called"}
    # tacotron's cleaner expands the abbreviation (and upper-cases); the comparison ignores case.
    assert scoring.error_rate(refs, {"u1": "doctor smith called"}, "word", cleaner="tacotron").errors == 0
    # The hypothesis is not cleaned (asr.sh: "Don't use cleaner for hyp").
    assert scoring.error_rate(refs, {"u1": "dr. smith called"}, "word", cleaner="tacotron").substitutions == 1
    assert scoring.error_rate(refs, {"u1": "DR. SMITH CALLED"}, "word").errors == 0


def test_non_linguistic_symbols_are_removed_from_both_sides():
    refs = {"u1": "alarm_set set an alarm"}
    hyps = {"u1": "alarm_query set an alarm"}
    symbols = ["alarm_set", "alarm_query"]
    assert scoring.error_rate(refs, hyps, "word", symbols).errors == 0
    assert scoring.error_rate(refs, hyps, "char", symbols).errors == 0
    assert scoring.error_rate(refs, hyps, "word").errors == 1


def test_intent_accuracy_takes_the_first_word():
    refs = {"u1": "alarm_set set an alarm", "u2": "play_music play jazz", "u3": "general_joke tell me a joke",
            "u4": "weather_query will it rain"}
    hyps = {"u1": "alarm_set set a alarm", "u2": "play_radio play jazz", "u3": ""}
    assert scoring.intent_accuracy(refs, hyps) == pytest.approx(1 / 4)


def test_score_decoding_reads_espnet_text_files(tmp_path):
    ref = tmp_path / "ref"
    hyp = tmp_path / "hyp"
    ref.write_text("u1 alarm_set set an alarm\nu2 play_music play some jazz\n")
    hyp.write_text("u2 play_music play jazz\n\nu1\n")  # an empty hypothesis is an id alone; blank lines skipped
    result = scoring.score_decoding(ref, hyp, "slu", ["alarm_set", "play_music"])
    assert result["intent_acc"] == pytest.approx(0.5)
    assert result["wer"] == pytest.approx((3 + 1) / (3 + 3))
    assert result["score_wer"]["utterances"] == 2 and result["score_wer"]["deletions"] == 4
    assert "intent_acc" not in scoring.score_decoding(ref, hyp, "asr")


def test_bad_input_is_named(tmp_path):
    duplicate = tmp_path / "text"
    duplicate.write_text("u1 a\nu1 b\n")
    with pytest.raises(ValueError, match="'u1' appears more than once"):
        scoring.score_decoding(duplicate, duplicate)
    with pytest.raises(ValueError, match="does not exist"):
        scoring.score_decoding(tmp_path / "missing", duplicate)
    with pytest.raises(ValueError, match="without a reference"):
        scoring.error_rate({"u1": "a"}, {"u2": "a"})
    with pytest.raises(ValueError, match="token_type must be one of"):
        scoring.error_rate({"u1": "a"}, {}, "phone")
    with pytest.raises(ValueError, match="no reference utterances"):
        scoring.intent_accuracy({}, {})
