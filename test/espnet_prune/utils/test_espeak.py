"""eSpeak NG synthesis: reproducible, plausible speech whose voice, rate and pitch follow the arguments."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from espnet_prune.utils.espeak import list_variants, synthesize

SENTENCE = "turn on the light"


def median_f0(waveform: np.ndarray, sample_rate: int = 16000) -> float:
    """Median autocorrelation pitch (Hz, 60..400) over 40 ms frames with speech-level energy."""
    frame, hop = sample_rate // 25, sample_rate // 50
    min_lag, max_lag = sample_rate // 400, sample_rate // 60
    estimates = []
    for start in range(0, len(waveform) - frame, hop):
        window = waveform[start:start + frame].astype(np.float64)
        if np.sqrt(np.mean(window**2)) < 0.05:
            continue
        window = window - window.mean()
        autocorrelation = np.correlate(window, window, "full")[frame - 1:]
        lag = min_lag + int(np.argmax(autocorrelation[min_lag:max_lag]))
        estimates.append(sample_rate / lag)
    assert len(estimates) >= 5, "too few voiced frames to estimate pitch"
    return float(np.median(estimates))


def test_list_variants_names_the_files_espeak_loads():
    variants = list_variants()
    assert variants == sorted(variants) and len(set(variants)) == len(variants)
    assert len(variants) >= 50
    assert {"f2", "m1", "m3", "whisper", "klatt"} <= set(variants)


def test_same_arguments_give_identical_samples():
    # eSpeak's in-process state makes a second synthesis differ from the first; each call must not.
    first = synthesize(SENTENCE, variant="m3", rate_wpm=160, pitch=40)
    synthesize("play some music", variant="whisper", rate_wpm=300, pitch=90)
    again = synthesize(SENTENCE, variant="m3", rate_wpm=160, pitch=40)
    assert np.array_equal(first, again)
    # The whisper variant is noise-excited: it must be reproducible too.
    assert np.array_equal(synthesize(SENTENCE, variant="whisper"), synthesize(SENTENCE, variant="whisper"))


def test_output_is_plausible_speech_at_the_requested_rate():
    wave16 = synthesize(SENTENCE)
    assert wave16.dtype == np.float32 and wave16.ndim == 1
    assert 0.3 < len(wave16) / 16000 < 5.0
    assert np.abs(wave16).max() <= 1.0
    assert np.sqrt(np.mean(wave16**2)) > 0.02  # not silent
    # Speech fills most of the clip: 40 ms frames above -30 dBFS.
    frames = wave16[: len(wave16) // 640 * 640].reshape(-1, 640)
    assert (np.sqrt((frames**2).mean(axis=1)) > 0.03).mean() > 0.5

    wave_native = synthesize(SENTENCE, sample_rate=22050)
    wave8 = synthesize(SENTENCE, sample_rate=8000)
    assert abs(len(wave_native) / 22050 - len(wave16) / 16000) < 1e-3
    assert abs(len(wave8) / 8000 - len(wave16) / 16000) < 1e-3
    # Resampling keeps the pitch.
    assert abs(median_f0(wave8, 8000) - median_f0(wave16)) / median_f0(wave16) < 0.1


def test_variant_rate_and_pitch_change_the_audio():
    male, female = synthesize(SENTENCE, variant="m3"), synthesize(SENTENCE, variant="f2")
    assert not np.array_equal(male[: min(len(male), len(female))], female[: min(len(male), len(female))])
    assert median_f0(female) > 1.5 * median_f0(male)

    low, normal, high = (synthesize(SENTENCE, variant="m1", pitch=pitch) for pitch in (20, 50, 80))
    assert median_f0(low) < 0.9 * median_f0(normal) and median_f0(high) > 1.1 * median_f0(normal)

    slow, fast = synthesize(SENTENCE, rate_wpm=100), synthesize(SENTENCE, rate_wpm=350)
    assert len(fast) < 0.6 * len(slow)


def test_concurrent_calls_match_sequential_ones():
    requests = [("m1", 150), ("f2", 180), ("m3", 200), ("m1", 150)]
    sequential = [synthesize(SENTENCE, variant=variant, rate_wpm=rate) for variant, rate in requests]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda args: synthesize(SENTENCE, variant=args[0], rate_wpm=args[1]), requests))
    for expected, got in zip(sequential, concurrent):
        assert np.array_equal(expected, got)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text=""), "non-empty"),
        (dict(text="   \n"), "non-empty"),
        (dict(text="a\0b"), "NUL"),
        (dict(text=SENTENCE, variant="no_such_variant"),
         r"unknown eSpeak voice variant 'no_such_variant'; available: .*\bm3\b"),
        (dict(text=SENTENCE, language="xx-nowhere"), "unknown eSpeak voice 'xx-nowhere'"),
        (dict(text=SENTENCE, language="en+m3"), "language must be"),
        (dict(text=SENTENCE, rate_wpm=20), r"rate_wpm must be an int in \[80, 450\]"),
        (dict(text=SENTENCE, rate_wpm=175.0), "rate_wpm must be an int"),
        (dict(text=SENTENCE, pitch=101), r"pitch must be an int in \[0, 100\]"),
        (dict(text=SENTENCE, sample_rate=0), "sample_rate must be a positive int"),
    ],
)
def test_bad_input_raises_a_named_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize(**kwargs)
