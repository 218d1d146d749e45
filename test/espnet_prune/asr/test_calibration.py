"""Calibration speech: synthesised offline, or read from a Kaldi wav.scp; held-out speech in
other voices; equal-length calibration segments."""

import numpy as np
import pytest
import soundfile

from espnet_prune.asr.frontend.calibration import (
    calibration_speech,
    held_out_speech,
    synthesized_speech,
    wav_scp_speech,
)
from espnet_prune.asr.frontend.onnx_export import calibration_segments


def test_synthesized_speech_is_reproducible_and_varied():
    waveforms, voices = synthesized_speech(3, seed=5)
    again, _ = synthesized_speech(3, seed=5)
    assert len(waveforms) == 3 and len(set(voices)) == 3
    assert all(w.dtype == np.float32 and w.ndim == 1 and w.size > 8000 for w in waveforms)
    assert all(np.array_equal(a, b) for a, b in zip(waveforms, again))
    assert [w.size for w in calibration_speech("synth:2")] == [w.size for w in synthesized_speech(2)[0]]


def test_held_out_speech_avoids_the_calibration_voices():
    speech = held_out_speech(2.5)
    assert speech.shape == (40000,) and speech.dtype == np.float32 and np.abs(speech).max() > 0.05
    _, calibration_voices = synthesized_speech(16)
    assert np.array_equal(speech, held_out_speech(2.5))
    from espnet_prune.asr.frontend import calibration

    held_out_voices = calibration._voice_order(np.random.default_rng(1), calibration_voices)
    assert not set(held_out_voices) & set(calibration_voices)


def test_a_wav_scp_is_read_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    waves = {"a": rng.uniform(-0.5, 0.5, 16000), "b": rng.uniform(-0.5, 0.5, 8000)}
    lines = []
    for key, wave in waves.items():
        soundfile.write(tmp_path / f"{key}.wav", wave, 16000, subtype="FLOAT")
        lines.append(f"{key} {tmp_path / f'{key}.wav'}\n")
    (tmp_path / "wav.scp").write_text("".join(lines))
    read = calibration_speech(str(tmp_path / "wav.scp"))
    assert [w.size for w in read] == [16000, 8000]
    assert np.allclose(read[0], waves["a"], atol=1e-6)
    assert len(wav_scp_speech(tmp_path / "wav.scp", 16000, limit=1)) == 1
    with pytest.raises(ValueError, match="utterance a has sample rate 16000, the model takes 8000"):
        wav_scp_speech(tmp_path / "wav.scp", 8000)
    (tmp_path / "empty.scp").write_text("")
    for source, message in ((str(tmp_path / "missing.scp"), "neither 'synth:N' nor an existing wav.scp"),
                            (str(tmp_path / "empty.scp"), "lists no utterances"),
                            ("synth:0", "synth:N with N a positive integer"),
                            ("synth:x", "synth:N with N a positive integer")):
        with pytest.raises(ValueError, match=message):
            calibration_speech(source)


def test_calibration_segments_have_one_shape():
    segments = calibration_segments([np.ones(30000), np.zeros(12000)], 16000, seconds=1.0)
    assert [s.shape for s in segments] == [(1, 16000), (1, 16000)] and segments[0].dtype == np.float32
    assert segments[1][0, 13999] == 1.0 and segments[1][0, 14000] == 0.0
    with pytest.raises(ValueError, match="less than one 1 s segment"):
        calibration_segments([np.ones(100)], 16000, seconds=1.0)
