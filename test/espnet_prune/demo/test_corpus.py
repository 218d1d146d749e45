"""The demo corpus: deterministic, valid Kaldi data dirs, disjoint voices, held-out sentences,
SLURP-style intents from the templates, and LM text without dev/test sentences."""

import re

import numpy as np
import pytest
import soundfile

from espnet_prune.demo import corpus
from espnet_prune.utils.kaldi_data import read_text, validate_data_dir

SIZES = dict(num_train=6, num_dev=3, num_test=3, num_lm_sentences=40, num_dev_voices=2, num_test_voices=3)


@pytest.fixture(scope="module")
def asr_corpus(tmp_path_factory):
    return corpus.make_corpus(tmp_path_factory.mktemp("asr") / "data", task="asr", seed=3, num_workers=2, **SIZES)


@pytest.fixture(scope="module")
def slu_corpus(tmp_path_factory):
    return corpus.make_corpus(tmp_path_factory.mktemp("slu") / "data", task="slu", seed=3, num_workers=2, **SIZES)


def template_regex(template: str) -> re.Pattern:
    """A regex that matches exactly the sentences ``template`` can produce."""
    parts = re.split(r"\{(\w+)\}", template)
    pattern = ""
    for index, part in enumerate(parts):
        pattern += re.escape(part) if index % 2 == 0 else "(" + "|".join(map(re.escape, corpus.SLOTS[part])) + ")"
    return re.compile(pattern + "$")


def intents_of(words: str):
    return {intent for intent, template in corpus.TEMPLATES if template_regex(template).match(words)}


def voice_of(speaker: str) -> str:
    return speaker.split("-", 1)[1]


def test_splits_are_valid_kaldi_dirs_of_16k_audio(asr_corpus):
    for split, count in (("train", 6), ("dev", 3), ("test", 3)):
        utt_ids = validate_data_dir(asr_corpus.split(split))
        assert len(utt_ids) == count
        for line in (asr_corpus.split(split) / "wav.scp").read_text().splitlines():
            info = soundfile.info(line.split(maxsplit=1)[1])
            assert info.samplerate == 16000 and info.subtype == "PCM_16" and 0.5 < info.duration < 8


def test_voices_are_disjoint_across_splits_and_speakers_are_voices(asr_corpus):
    voices = {}
    for split in corpus.SPLITS:
        speakers = {line.split()[1] for line in (asr_corpus.split(split) / "utt2spk").read_text().splitlines()}
        assert all(speaker.startswith(f"{split}-") for speaker in speakers)
        voices[split] = {voice_of(speaker) for speaker in speakers}
    assert not voices["train"] & voices["dev"] and not voices["train"] & voices["test"]
    assert not voices["dev"] & voices["test"]
    assert len(voices["dev"]) == 2 and len(voices["test"]) == 3
    # The voices named in corpus.json: all eSpeak variants shared out, each split's disjoint.
    assigned = corpus.assign_voices(2, 3, seed=3)
    all_variants = {corpus.speaker_name(v) for v in corpus.list_variants()}
    assert {corpus.speaker_name(v) for s in corpus.SPLITS for v in assigned[s]} == all_variants
    for split in corpus.SPLITS:
        assert voices[split] <= {corpus.speaker_name(v) for v in assigned[split]}


def test_same_seed_gives_identical_audio_and_text_whatever_the_workers(asr_corpus, tmp_path):
    again = corpus.make_corpus(tmp_path / "data", task="asr", seed=3, num_workers=1, **SIZES)
    for split in corpus.SPLITS:
        first, second = asr_corpus.split(split), again.split(split)
        assert read_text(first) == read_text(second)
        assert (first / "utt2spk").read_text() == (second / "utt2spk").read_text()
        for utt_id in read_text(first):
            assert (first / "wavs" / f"{utt_id}.wav").read_bytes() == (second / "wavs" / f"{utt_id}.wav").read_bytes()
    assert asr_corpus.lm_text.read_text() == again.lm_text.read_text()


def test_another_seed_gives_other_sentences_and_voices(asr_corpus, tmp_path):
    other = corpus.make_corpus(tmp_path / "data", task="asr", seed=4, num_workers=2, **SIZES)
    assert read_text(other.test) != read_text(asr_corpus.test)
    assert corpus.assign_voices(2, 3, seed=4) != corpus.assign_voices(2, 3, seed=3)


def test_audio_is_speech_with_light_noise():
    spec = corpus.UtteranceSpec(utt_id="u", speaker="s", variant="m3", rate_wpm=170, pitch=50, snr_db=30.0,
                                noise_seed=5, intent="general_joke", words="tell me a joke")
    clean = corpus.synthesize("tell me a joke", variant="m3", rate_wpm=170, pitch=50).astype(np.float64)
    noisy = corpus.render(spec).astype(np.float64)
    assert noisy.shape == clean.shape
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert 29.0 < snr < 31.0
    assert np.array_equal(corpus.render(spec), corpus.render(spec))


def test_asr_text_comes_from_the_templates_and_dev_test_sentences_are_held_out(asr_corpus):
    texts = {split: read_text(asr_corpus.split(split)) for split in corpus.SPLITS}
    for split_texts in texts.values():
        for words in split_texts.values():
            assert intents_of(words), f"'{words}' matches no template"
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", words)
    held_out = set(texts["dev"].values()) | set(texts["test"].values())
    assert len(set(texts["test"].values())) == 3  # test sentences are distinct
    assert not held_out & set(texts["train"].values())
    lm_lines = asr_corpus.lm_text.read_text().splitlines()
    lm_sentences = [line.split(maxsplit=1)[1] for line in lm_lines]
    assert len(lm_sentences) == 40 + 6  # template text plus the training transcripts
    assert not held_out & set(lm_sentences)
    assert set(texts["train"].values()) <= set(lm_sentences)
    assert asr_corpus.nlsyms is None


def test_slu_text_is_a_slurp_intent_then_the_words(slu_corpus):
    intents = corpus.intents()
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)+", intent) for intent in intents)
    assert slu_corpus.nlsyms.read_text().split() == intents
    for split in corpus.SPLITS:
        texts = read_text(slu_corpus.split(split))
        transcripts = read_text(slu_corpus.split(split), filename="transcript")
        assert texts.keys() == transcripts.keys()
        for utt_id, text in texts.items():
            intent, words = text.split(maxsplit=1)
            assert words == transcripts[utt_id]
            assert intent in intents_of(words)
    assert all(line.split()[1] in intents for line in slu_corpus.lm_text.read_text().splitlines())


def test_templates_cover_many_intents_and_every_slot_is_defined():
    assert len(corpus.intents()) >= 20
    for _, template in corpus.TEMPLATES:
        for slot in re.findall(r"\{(\w+)\}", template):
            assert slot in corpus.SLOTS
    rng = np.random.default_rng(0)
    assert corpus.fill_template("play {genre} music", rng).split()[1] in corpus.SLOTS["genre"]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown slot 'colour'"):
        corpus.fill_template("paint it {colour}", np.random.default_rng(0))
    with pytest.raises(ValueError, match="task must be one of"):
        corpus.make_corpus(tmp_path / "a", task="tts")
    with pytest.raises(ValueError, match="num_train must be a positive int"):
        corpus.make_corpus(tmp_path / "b", num_train=0)
    with pytest.raises(ValueError, match="leave none of the"):
        corpus.assign_voices(60, 60, seed=0)


def test_drawing_more_distinct_sentences_than_the_templates_allow_fails(monkeypatch):
    monkeypatch.setattr(corpus, "TEMPLATES", (("general_joke", "tell me a joke"),
                                              ("lists_query", "what is on my shopping list")))
    rng = np.random.default_rng(0)
    drawn = corpus.draw_sentences(rng, 2, unique=True)
    assert sorted(drawn) == [("general_joke", "tell me a joke"), ("lists_query", "what is on my shopping list")]
    unexcluded = corpus.draw_sentences(rng, 1, exclude={"tell me a joke"})
    assert unexcluded == [("lists_query", "what is on my shopping list")]
    with pytest.raises(RuntimeError, match="could not draw 3 distinct sentences"):
        corpus.draw_sentences(rng, 3, unique=True)


def test_pretraining_audio_is_apart_from_the_corpus(asr_corpus, tmp_path):
    sizes = {key: SIZES[key] for key in ("num_dev", "num_test", "num_dev_voices", "num_test_voices")}
    corpus.main(["--output_dir", str(tmp_path / "unlabelled"), "--unlabelled", "12", "--seed", "3",
                 *[f"--{key}={value}" for key, value in sizes.items()]])
    data_dir = tmp_path / "unlabelled"
    assert len(validate_data_dir(data_dir)) == 12
    held_out = set(read_text(asr_corpus.dev).values()) | set(read_text(asr_corpus.test).values())
    assert not held_out & set(read_text(data_dir).values())
    speakers = set(read_text(data_dir, "utt2spk").values())
    train_voices = {voice_of(speaker) for speaker in read_text(asr_corpus.train, "utt2spk").values()}
    assert all(speaker.startswith("pretrain-") for speaker in speakers)
    unheard = {voice_of(s) for split in (asr_corpus.dev, asr_corpus.test) for s in read_text(split, "utt2spk").values()}
    assert not {voice_of(speaker) for speaker in speakers} & unheard
    assert {voice_of(speaker) for speaker in speakers} <= set(corpus.assign_voices(2, 3, 3)["train"])
    assert train_voices <= set(corpus.assign_voices(2, 3, 3)["train"])
