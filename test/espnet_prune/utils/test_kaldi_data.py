"""Kaldi data directories: written sorted and consistent, corrupted ones rejected by name; the
synthetic ASR/SLU corpora of ``test/espnet_prune/fixtures.py`` are valid ESPnet input."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_prune.utils.kaldi_data import Utterance, read_text, validate_data_dir, write_data_dir, write_text
from test.espnet_prune.fixtures import COMMANDS, SPLIT_VARIANTS, make_asr_corpus


def tone(seconds: float, frequency: float = 220.0, amplitude: float = 0.5) -> np.ndarray:
    time = np.arange(int(seconds * 16000)) / 16000
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def sample_utterances():
    # Given out of order; speakers "s1" and "s10" would sort inconsistently with "_" separators.
    return [
        Utterance("s2-b", "s2", tone(0.3, 330.0), "play some music"),
        Utterance("s10-a", "s10", tone(0.2, 440.0), "stop"),
        Utterance("s1-b", "s1", tone(0.4), "turn on the light"),
        Utterance("s1-a", "s1", -tone(0.5, amplitude=1.0), "what time is it"),
    ]


def test_write_then_validate_round_trip(tmp_path):
    data_dir = write_data_dir(tmp_path / "train", sample_utterances())
    assert validate_data_dir(data_dir) == ["s1-a", "s1-b", "s10-a", "s2-b"]
    assert (data_dir / "utt2spk").read_text() == "s1-a s1\ns1-b s1\ns10-a s10\ns2-b s2\n"
    assert (data_dir / "spk2utt").read_text() == "s1 s1-a s1-b\ns10 s10-a\ns2 s2-b\n"
    assert read_text(data_dir) == {
        "s1-a": "what time is it", "s1-b": "turn on the light", "s10-a": "stop", "s2-b": "play some music"
    }
    wav_lines = (data_dir / "wav.scp").read_text().splitlines()
    assert [line.split()[0] for line in wav_lines] == ["s1-a", "s1-b", "s10-a", "s2-b"]
    for utterance in sample_utterances():
        wav_path = Path(dict(line.split(maxsplit=1) for line in wav_lines)[utterance.utt_id])
        assert wav_path.is_absolute() and wav_path.parent == (tmp_path / "train" / "wavs").resolve()
        info = soundfile.info(str(wav_path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        samples, _ = soundfile.read(str(wav_path), dtype="float32")
        assert samples.shape == utterance.waveform.shape
        assert np.abs(samples - utterance.waveform).max() < 2.0 / 32768


def test_wav_dir_and_extra_text_file(tmp_path):
    data_dir = write_data_dir(tmp_path / "dev", sample_utterances(), wav_dir=tmp_path / "audio")
    assert sorted(path.name for path in (tmp_path / "audio").iterdir()) == [
        "s1-a.wav", "s1-b.wav", "s10-a.wav", "s2-b.wav"
    ]
    assert not (data_dir / "wavs").exists()
    write_text(data_dir, {"s2-b": "b", "s1-a": "a"}, filename="transcript")
    assert (data_dir / "transcript").read_text() == "s1-a a\ns2-b b\n"
    assert read_text(data_dir, "transcript") == {"s1-a": "a", "s2-b": "b"}


def test_read_text_maps_missing_transcript_to_empty(tmp_path):
    (tmp_path / "text").write_text("u1 hello  world\nu2\n")
    assert read_text(tmp_path) == {"u1": "hello  world", "u2": ""}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda u: [Utterance("x-1", "s1", u[0].waveform, "hi")], "must start with its speaker id 's1'"),
        (lambda u: u + [u[0]], "duplicate utterance id 's2-b'"),
        (lambda u: [Utterance("s1 a", "s1", u[0].waveform, "hi")], "without whitespace"),
        (lambda u: [Utterance("s1/a", "s1", u[0].waveform, "hi")], "must not contain '/'"),
        (lambda u: [Utterance("s1-a", "s1", u[0].waveform * 2.5, "hi")], r"peak 1\.250 is outside \[-1, 1\]"),
        (lambda u: [Utterance("s1-a", "s1", np.array([0.1, np.nan], np.float32), "hi")], "NaN"),
        (lambda u: [Utterance("s1-a", "s1", np.zeros(10, np.int16), "hi")], "must be float"),
        (lambda u: [Utterance("s1-a", "s1", np.zeros((2, 10), np.float32), "hi")], "1-D"),
        (lambda u: [Utterance("s1-a", "s1", u[0].waveform, " ")], "non-empty"),
        (lambda u: [Utterance("s1-a", "s1", u[0].waveform, "two\nlines")], "one line"),
        (lambda u: [], "no utterances"),
        # "s1_a" sorts after "s10_a" although "s1" sorts before "s10".
        (lambda u: [Utterance("s1_a", "s1", u[0].waveform, "a"), Utterance("s10_a", "s10", u[0].waveform, "b")],
         "not sorted by speaker id .*'s10_a' of 's10' comes before 's1_a' of 's1'"),
    ],
)
def test_write_rejects_bad_records(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        write_data_dir(tmp_path / "bad", change(sample_utterances()))
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_write_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "feats.scp").write_text("u1 x.ark:1\n")
    with pytest.raises(ValueError, match="is not empty"):
        write_data_dir(tmp_path / "old", sample_utterances())


def _swap_lines(path: Path, first: int, second: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[first], lines[second] = lines[second], lines[first]
    path.write_text("".join(lines))


def _drop_line(path: Path, index: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:index] + lines[index + 1:]))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: _swap_lines(d / "text", 0, 1), r"text is not sorted: 's1-b' comes before 's1-a'"),
        (lambda d: _drop_line(d / "text", 2),
         r"utt2spk and text have different utterance ids: only in utt2spk: \['s10-a'\]"),
        (lambda d: (d / "wav.scp").write_text((d / "wav.scp").read_text().replace("s2-b ", "s2-c ")),
         r"only in utt2spk: \['s2-b'\]; only in wav.scp: \['s2-c'\]"),
        (lambda d: (d / "wavs" / "s1-b.wav").unlink(), "file of utterance 's1-b' does not exist"),
        (lambda d: (d / "spk2utt").unlink(), "has no 'spk2utt' file"),
        (lambda d: (d / "spk2utt").write_text("s1 s1-a\ns10 s10-a\ns2 s2-b\n"),
         r"speaker 's1' lists \['s1-a'\], but utt2spk gives \['s1-a', 's1-b'\]"),
        (lambda d: _drop_line(d / "spk2utt", 1), r"different speaker ids: only in utt2spk: \['s10'\]"),
        (lambda d: (d / "utt2spk").write_text("s1-a s1\ns1-b s3\ns10-a s10\ns2-b s2\n"),
         "sorted by utterance id it is not sorted by speaker id .*make speaker ids prefixes"),
        (lambda d: (d / "text").write_text("s1-a a\ns1-a b\ns10-a c\ns2-b d\n"),
         r"text:2: 's1-a' appears more than once"),
        (lambda d: (d / "utt2spk").write_text("s1-a s1\n\ns1-b s1\ns10-a s10\ns2-b s2\n"), r"utt2spk:2: empty line"),
        (lambda d: (d / "utt2spk").write_text("s1-a s1 s2\ns1-b s1\ns10-a s10\ns2-b s2\n"), "exactly one speaker id"),
    ],
)
def test_validate_names_the_problem_of_a_corrupted_dir(tmp_path, corrupt, message):
    data_dir = write_data_dir(tmp_path / "train", sample_utterances())
    corrupt(data_dir)
    with pytest.raises(ValueError, match=message):
        validate_data_dir(data_dir)


def test_validate_wav_scp_entries_that_are_not_plain_files(tmp_path):
    data_dir = write_data_dir(tmp_path / "train", sample_utterances())
    ark = tmp_path / "feats.ark"
    ark.write_bytes(b"\0")
    entries = {"s1-a": "sox in.flac -t wav - |", "s1-b": f"{ark}:12", "s10-a": f"{tmp_path / 'gone.ark'}:7"}
    lines = [line.split(maxsplit=1) for line in (data_dir / "wav.scp").read_text().splitlines()]
    (data_dir / "wav.scp").write_text("".join(f"{utt} {entries.get(utt, path)}\n" for utt, path in lines))
    with pytest.raises(ValueError, match="file of utterance 's10-a' does not exist"):
        validate_data_dir(data_dir)
    assert validate_data_dir(data_dir, check_wav_files=False) == ["s1-a", "s1-b", "s10-a", "s2-b"]


# ---- the synthetic corpora of test/espnet_prune/fixtures.py ----


def _speakers(data_dir: Path) -> set:
    return set(read_text(data_dir, "utt2spk").values())


def test_asr_corpus_is_valid_with_disjoint_speakers_and_voices(asr_corpus):
    train, valid = asr_corpus["train"], asr_corpus["valid"]
    assert len(validate_data_dir(train)) == 12 and len(validate_data_dir(valid)) == 4
    assert not _speakers(train) & _speakers(valid)
    voices = {
        split: {speaker.split("-", 1)[1] for speaker in _speakers(asr_corpus[split])} for split in ("train", "valid")
    }
    assert voices == {split: set(SPLIT_VARIANTS[split]) for split in voices}
    assert not voices["train"] & voices["valid"]

    sentences = {words for _, words in COMMANDS}
    total_seconds = 0.0
    for split in ("train", "valid"):
        assert set(read_text(asr_corpus[split]).values()) <= sentences
        for line in (asr_corpus[split] / "wav.scp").read_text().splitlines():
            samples, rate = soundfile.read(line.split(maxsplit=1)[1], dtype="float32")
            assert rate == 16000 and 0.5 < len(samples) / rate < 3.0
            assert np.sqrt(np.mean(samples**2)) > 0.02
            total_seconds += len(samples) / rate
    assert 10 < total_seconds < 40

    tokens = asr_corpus["token_list"].read_text().splitlines()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(tokens) == len(set(tokens)) and "<space>" in tokens
    assert {char for sentence in sentences for char in sentence.replace(" ", "")} <= set(tokens)


def _audio(data_dir: Path) -> dict:
    return {utt_id: (data_dir / "wavs" / f"{utt_id}.wav").read_bytes() for utt_id in read_text(data_dir)}


def test_corpus_is_reproducible_from_its_seed(tmp_path):
    first = make_asr_corpus(tmp_path / "a", num_train=2, num_valid=1, seed=3)
    second = make_asr_corpus(tmp_path / "b", num_train=2, num_valid=1, seed=3)
    other_seed = make_asr_corpus(tmp_path / "c", num_train=2, num_valid=1, seed=4)
    for split in ("train", "valid"):
        assert read_text(first[split]) == read_text(second[split])
        assert _audio(first[split]) == _audio(second[split])
        assert _audio(first[split]) != _audio(other_seed[split])
    assert first["token_list"].read_text() == second["token_list"].read_text()


def test_slu_corpus_has_slurp_style_text_and_loads_in_espnet(slu_corpus):
    from espnet2.text.char_tokenizer import CharTokenizer
    from espnet2.text.token_id_converter import TokenIDConverter
    from espnet2.train.dataset import ESPnetDataset

    intents = sorted({intent for intent, _ in COMMANDS})
    assert slu_corpus["nlsyms"].read_text().split() == intents
    tokens = slu_corpus["token_list"].read_text().splitlines()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert tokens[2:2 + len(intents)] == intents and len(tokens) == len(set(tokens))

    # What ESPnet's CommonPreprocessor does for slu.sh --token_type char --nlsyms_txt nlsyms.txt
    # (espnet2.train.preprocessor itself is not imported: it pulls in g2p_en, ~7 s).
    tokenizer = CharTokenizer(non_linguistic_symbols=slu_corpus["nlsyms"])
    converter = TokenIDConverter(slu_corpus["token_list"])
    for split in ("train", "valid"):
        data_dir = slu_corpus[split]
        texts, transcripts = read_text(data_dir), read_text(data_dir, "transcript")
        assert list(texts) == list(transcripts) == validate_data_dir(data_dir)
        speech_set = ESPnetDataset([(str(data_dir / "wav.scp"), "speech", "sound")])
        for utt_id, text in texts.items():
            intent, words = text.split(maxsplit=1)
            assert (intent, words) in COMMANDS and transcripts[utt_id] == words
            token_ids = converter.tokens2ids(tokenizer.text2tokens(text))
            assert token_ids[0] == tokens.index(intent)  # the intent is one token
            assert tokens.index("<unk>") not in token_ids
            assert len(token_ids) == 2 + len(words)  # intent, <space>, one token per character
            speech = speech_set[utt_id][1]["speech"]
            assert speech.dtype == np.float32 and speech.ndim == 1 and 0.5 < len(speech) / 16000 < 3.0


def test_tables_are_read_and_written_in_kaldis_order(tmp_path):
    from espnet_prune.utils.kaldi_data import read_table, spk2utt, write_table

    path = write_table(tmp_path / "utt2num_samples", {"s2-a": 8000, "s1-b": 800, "s1-a": 16000})
    assert path.read_text() == "s1-a 16000\ns1-b 800\ns2-a 8000\n"
    assert read_table(path) == {"s1-a": "16000", "s1-b": "800", "s2-a": "8000"}
    hyps = tmp_path / "hyps"
    hyps.write_text("u2 play  some music\n\nu1\n")  # an empty hypothesis is an id alone
    with pytest.raises(ValueError, match="hyps:2: empty line"):
        read_table(hyps)
    assert read_table(hyps, skip_empty_lines=True) == {"u2": "play  some music", "u1": ""}
    hyps.write_text("u1 a\nu1 b\n")
    with pytest.raises(ValueError, match="'u1' appears more than once"):
        read_table(hyps)
    with pytest.raises(ValueError, match="does not exist"):
        read_table(tmp_path / "missing")
    assert spk2utt({"s1-b": "s1", "s2-a": "s2", "s1-a": "s1"}) == {"s1": "s1-a s1-b", "s2": "s2-a"}


def test_a_subset_of_a_data_dir_is_a_valid_data_dir(tmp_path):
    from espnet_prune.utils.kaldi_data import subset_data_dir

    source = write_data_dir(tmp_path / "train", sample_utterances())
    write_text(source, {utt: f"t {utt}" for utt in validate_data_dir(source)}, filename="transcript")
    (source / "feats_type").write_text("raw\n")
    target = tmp_path / "subset"
    target.mkdir()
    (target / "stale").write_text("")  # the target is replaced
    kept = subset_data_dir(source, target, {"s1-b", "s2-b", "unknown"}, ("wav.scp", "text", "utt2spk", "transcript"),
                           copy=("feats_type",))
    assert kept == 2 and not (target / "stale").exists()
    assert validate_data_dir(target) == ["s1-b", "s2-b"]
    assert (target / "spk2utt").read_text() == "s1 s1-b\ns2 s2-b\n"
    assert read_text(target, "transcript") == {"s1-b": "t s1-b", "s2-b": "t s2-b"}
    assert (target / "feats_type").read_text() == "raw\n"
