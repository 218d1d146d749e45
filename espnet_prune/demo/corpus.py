"""The demo's corpus: voice-assistant commands spoken by eSpeak NG, in ESPnet's data layout.

Sentences come from templates with slots (times, days, rooms, places, people, ...), each
template labelled with a SLURP-style ``scenario_action`` intent, e.g.
``"set an alarm for {time} {day}"`` -> ``alarm_set``. Every utterance is spoken by one eSpeak
NG voice variant (``espeak-ng-data/voices/!v``, ~100 of them) at a speaking rate and pitch of
its speaker with a small per-utterance jitter, and gets light white noise at a random SNR.
Train, dev and test use disjoint sets of voice variants (unseen speakers at test time) and the
dev and test sentences do not occur in the training audio nor in the LM text.

:func:`make_corpus` writes, for ``task="asr"``::

    DIR/train/{wav.scp,text,utt2spk,spk2utt,wavs/}   text: "<utt> set an alarm for seven am"
    DIR/dev/...  DIR/test/...
    DIR/lm_train.txt                                 "<key> <sentence>": template text for the LM
    DIR/corpus.json                                  sizes, voices per split, seed

and for ``task="slu"`` the same with ``text`` = ``"<intent> <words>"`` (the first token is
the intent, as ESPnet's SLURP recipe writes it), a ``transcript`` file with the words alone
and ``DIR/nlsyms.txt`` listing the intents (non-linguistic symbols for char tokens).

Everything depends only on the arguments: the same seed and sizes give identical wav bytes
and texts, whatever ``num_workers`` is.
"""

import argparse
import inspect
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import soundfile

from espnet_prune.utils.espeak import list_variants, synthesize
from espnet_prune.utils.kaldi_data import Utterance, write_data_dir, write_text

PathLike = Union[str, Path]
TASKS = ("asr", "slu")
SPLITS = ("train", "dev", "test")

_HOURS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")

#: Slot name -> values. Words only (lower case a-z and spaces), so that eSpeak reads them as written.
SLOTS: Dict[str, Tuple[str, ...]] = {
    "time": tuple(f"{hour} {suffix}" for hour in _HOURS for suffix in ("am", "pm", "thirty", "fifteen"))
    + tuple(f"half past {hour}" for hour in _HOURS) + ("noon", "midnight"),
    "day": ("today", "tomorrow", "tonight", "this evening", "this weekend", "next week", "on monday",
            "on tuesday", "on wednesday", "on thursday", "on friday", "on saturday", "on sunday"),
    "room": ("kitchen", "bedroom", "living room", "bathroom", "office", "hallway", "garage", "dining room"),
    "color": ("red", "blue", "green", "yellow", "purple", "orange", "pink", "warm white"),
    "device": ("coffee machine", "fan", "heater", "smart plug", "air purifier", "television"),
    "place": ("london", "paris", "boston", "tokyo", "berlin", "madrid", "chicago", "seattle", "dublin",
              "sydney", "toronto", "the airport", "the station", "the city centre"),
    "person": ("john", "mary", "alice", "david", "sarah", "peter", "my mother", "my boss", "the team", "emma"),
    "item": ("milk", "eggs", "bread", "apples", "coffee", "rice", "butter", "cheese", "tomatoes", "bananas",
             "orange juice", "pasta"),
    "topic": ("sports", "politics", "science", "technology", "business", "music", "health", "travel"),
    "dish": ("pancakes", "pasta", "chicken curry", "vegetable soup", "pizza", "lasagna", "banana bread",
             "fried rice"),
    "genre": ("jazz", "rock", "classical", "pop", "country", "blues", "relaxing", "dance"),
    "number": ("two", "three", "four", "five", "ten", "fifteen", "twenty", "thirty"),
}

#: (intent, template): ``{slot}`` is replaced by a value of :data:`SLOTS`.
TEMPLATES: Tuple[Tuple[str, str], ...] = (
    ("alarm_set", "set an alarm for {time}"),
    ("alarm_set", "set an alarm for {time} {day}"),
    ("alarm_set", "wake me up at {time} {day}"),
    ("alarm_remove", "cancel my alarm for {time}"),
    ("alarm_remove", "delete the alarm {day}"),
    ("alarm_query", "what alarms do i have {day}"),
    ("iot_hue_lighton", "turn on the lights in the {room}"),
    ("iot_hue_lighton", "switch on the {room} light"),
    ("iot_hue_lightoff", "turn off the lights in the {room}"),
    ("iot_hue_lightoff", "switch off the {room} light"),
    ("iot_hue_lightchange", "change the {room} lights to {color}"),
    ("iot_hue_lightchange", "make the lights {color}"),
    ("iot_hue_lightdim", "dim the lights in the {room}"),
    ("iot_wemo_on", "turn on the {device}"),
    ("iot_wemo_off", "turn off the {device}"),
    ("iot_cleaning", "start the vacuum cleaner in the {room}"),
    ("audio_volume_up", "turn the volume up"),
    ("audio_volume_up", "make it louder please"),
    ("audio_volume_down", "turn the volume down to {number} percent"),
    ("audio_volume_mute", "mute the speakers"),
    ("play_music", "play some {genre} music"),
    ("play_music", "play {genre} songs in the {room}"),
    ("play_radio", "play the {genre} radio station"),
    ("play_podcasts", "play the latest {topic} podcast"),
    ("weather_query", "what is the weather in {place} {day}"),
    ("weather_query", "will it rain in {place} {day}"),
    ("weather_query", "how cold will it be {day}"),
    ("datetime_query", "what time is it in {place}"),
    ("datetime_query", "what is the date {day}"),
    ("calendar_set", "schedule a meeting with {person} {day} at {time}"),
    ("calendar_set", "remind me to call {person} at {time}"),
    ("calendar_query", "what is on my calendar {day}"),
    ("calendar_query", "when is my meeting with {person}"),
    ("email_sendemail", "send an email to {person} about {topic}"),
    ("email_query", "do i have new emails from {person}"),
    ("lists_createoradd", "add {item} to my shopping list"),
    ("lists_createoradd", "put {item} and {item} on the list"),
    ("lists_query", "what is on my shopping list"),
    ("transport_taxi", "book a taxi to {place} at {time}"),
    ("transport_query", "when is the next train to {place}"),
    ("cooking_recipe", "how do i make {dish}"),
    ("cooking_recipe", "give me a recipe for {dish}"),
    ("news_query", "what is the latest {topic} news"),
    ("general_joke", "tell me a joke"),
    ("takeaway_order", "order {dish} for {number} people"),
    ("qa_currency", "how many dollars is {number} euros"),
)

_SLOT = re.compile(r"\{(\w+)\}")

RATE_WPM_RANGE = (135, 205)  # a speaker's speaking rate (words per minute), uniform
PITCH_RANGE = (25, 75)  # a speaker's eSpeak base pitch (50 = the voice's normal), uniform
RATE_JITTER = 12  # per-utterance rate change, uniform in [-RATE_JITTER, +RATE_JITTER]
PITCH_JITTER = 6  # per-utterance pitch change, likewise
SNR_DB_RANGE = (25.0, 40.0)  # white-noise SNR per utterance, uniform


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything that determines one utterance's audio and text."""

    utt_id: str
    speaker: str
    variant: str
    rate_wpm: int
    pitch: int
    snr_db: float
    noise_seed: int
    intent: str
    words: str


@dataclass(frozen=True)
class Corpus:
    """Paths written by :func:`make_corpus`."""

    root: Path
    train: Path
    dev: Path
    test: Path
    lm_text: Path  # "<key> <sentence>" lines for LM training
    nlsyms: Optional[Path]  # SLU: the intents, one a line (non-linguistic symbols); ASR: None
    task: str

    def split(self, name: str) -> Path:
        """Data directory of split ``name`` (``train``, ``dev`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split '{name}'; the corpus has {SPLITS}")
        return getattr(self, name)


def intents() -> List[str]:
    """Every intent label of :data:`TEMPLATES`, sorted."""
    return sorted({intent for intent, _ in TEMPLATES})


def fill_template(template: str, rng: np.random.Generator) -> str:
    """``template`` with each ``{slot}`` replaced by a value drawn from :data:`SLOTS`.

    Raises:
        ValueError: the template names a slot that :data:`SLOTS` lacks.
    """

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in SLOTS:
            raise ValueError(f"template '{template}' names unknown slot '{name}'; known: {sorted(SLOTS)}")
        values = SLOTS[name]
        return values[int(rng.integers(len(values)))]

    return _SLOT.sub(value, template)


def draw_sentence(rng: np.random.Generator) -> Tuple[str, str]:
    """A random ``(intent, words)``: a template drawn uniformly, then its slots."""
    intent, template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return intent, fill_template(template, rng)


def draw_sentences(rng: np.random.Generator, count: int, exclude: Set[str] = frozenset(),
                   unique: bool = False) -> List[Tuple[str, str]]:
    """``count`` sentences from :func:`draw_sentence` whose words are not in ``exclude``.

    Args:
        rng: the random generator (advanced).
        count: how many to draw.
        exclude: word strings that must not be returned.
        unique: no sentence twice.
    Raises:
        RuntimeError: the templates cannot give that many (distinct) sentences.
    """
    sentences: List[Tuple[str, str]] = []
    taken: Set[str] = set()
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError(f"could not draw {count} {'distinct ' if unique else ''}sentences outside the "
                               f"{len(exclude)} excluded ones from the templates; ask for fewer")
        intent, words = draw_sentence(rng)
        if words in exclude or (unique and words in taken):
            continue
        taken.add(words)
        sentences.append((intent, words))
    return sentences


def speaker_name(variant: str) -> str:
    """A speaker id part for an eSpeak variant name: no spaces (``"Mr serious"`` -> ``"Mr_serious"``)."""
    return re.sub(r"\s+", "_", variant.strip())


def assign_voices(num_dev_voices: int, num_test_voices: int, seed: int,
                  variants: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Disjoint voice variants per split: a seeded shuffle, test first, then dev, the rest train.

    Args:
        num_dev_voices: variants for dev.
        num_test_voices: variants for test.
        seed: seed of the shuffle.
        variants: the variants to share out (default: all of :func:`list_variants`).
    Returns:
        ``{"train": [...], "dev": [...], "test": [...]}``, each sorted.
    Raises:
        ValueError: fewer than one variant would be left for training.
    """
    pool = sorted(list_variants() if variants is None else variants)
    for name, count in (("num_dev_voices", num_dev_voices), ("num_test_voices", num_test_voices)):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be a positive int, got {count!r}")
    if num_dev_voices + num_test_voices >= len(pool):
        raise ValueError(f"{num_dev_voices} dev + {num_test_voices} test voices leave none of the {len(pool)} "
                         "eSpeak variants for training")
    order = [pool[i] for i in np.random.default_rng([seed, 1]).permutation(len(pool))]
    return {"test": sorted(order[:num_test_voices]),
            "dev": sorted(order[num_test_voices:num_test_voices + num_dev_voices]),
            "train": sorted(order[num_test_voices + num_dev_voices:])}


def plan_split(split: str, sentences: Sequence[Tuple[str, str]], voices: Sequence[str],
               rng: np.random.Generator) -> List[UtteranceSpec]:
    """Utterance specs for ``sentences`` spoken round-robin by ``voices``.

    Each voice is one speaker ``<split>-<voice>`` with its own rate and pitch (drawn from
    :data:`RATE_WPM_RANGE` / :data:`PITCH_RANGE`); each utterance jitters them and draws its SNR.
    """
    base = {voice: (int(rng.integers(RATE_WPM_RANGE[0], RATE_WPM_RANGE[1] + 1)),
                    int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))) for voice in voices}
    specs = []
    for index, (intent, words) in enumerate(sentences):
        voice = voices[index % len(voices)]
        rate, pitch = base[voice]
        speaker = f"{split}-{speaker_name(voice)}"
        specs.append(UtteranceSpec(
            utt_id=f"{speaker}-{index:05d}",
            speaker=speaker,
            variant=voice,
            rate_wpm=int(np.clip(rate + rng.integers(-RATE_JITTER, RATE_JITTER + 1), 80, 450)),
            pitch=int(np.clip(pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100)),
            snr_db=float(rng.uniform(*SNR_DB_RANGE)),
            noise_seed=int(rng.integers(2**31)),
            intent=intent,
            words=words,
        ))
    return specs


def render(spec: UtteranceSpec, sample_rate: int = 16000) -> np.ndarray:
    """The waveform of ``spec``: eSpeak NG speech plus white noise at ``spec.snr_db``.

    Returns:
        ``(num_samples,)`` float32 in [-1, 1].
    """
    speech = synthesize(spec.words, variant=spec.variant, rate_wpm=spec.rate_wpm, pitch=spec.pitch,
                        sample_rate=sample_rate).astype(np.float64)
    power = float(np.mean(speech**2))
    noise = np.random.default_rng(spec.noise_seed).standard_normal(speech.shape[0])
    noisy = speech + math.sqrt(power / 10 ** (spec.snr_db / 10)) * noise
    peak = float(np.abs(noisy).max())
    if peak > 0.99:
        noisy *= 0.99 / peak
    return noisy.astype(np.float32)


def _text_of(spec: UtteranceSpec, task: str) -> str:
    return spec.words if task == "asr" else f"{spec.intent} {spec.words}"


def draw_held_out(rng: np.random.Generator, num_dev: int, num_test: int
                  ) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """The test and dev sentences, drawn first from ``rng`` so that nothing else contains them.

    Returns:
        ``(test, dev)`` lists of distinct ``(intent, words)``, disjoint from each other.
    """
    test = draw_sentences(rng, num_test, unique=True)
    dev = draw_sentences(rng, num_dev, exclude={words for _, words in test}, unique=True)
    return test, dev


def make_corpus(output_dir: PathLike, task: str = "asr", num_train: int = 1000, num_dev: int = 100,
                num_test: int = 100, num_lm_sentences: int = 20000, num_dev_voices: int = 6,
                num_test_voices: int = 10, seed: int = 0, num_workers: int = 2) -> Corpus:
    """Synthesise the corpus into ``output_dir`` (see the module docstring for the layout).

    Args:
        output_dir: directory to write; must not hold the splits yet.
        task: ``asr`` (``text`` = words) or ``slu`` (``text`` = intent + words, plus ``transcript``).
        num_train, num_dev, num_test: utterances per split.
        num_lm_sentences: template sentences for ``lm_train.txt`` (plus the training transcripts).
        num_dev_voices, num_test_voices: voice variants for dev and test; training gets the rest.
        seed: seed of sentences, voices, rates, pitches and noise.
        num_workers: parallel synthesis processes (each utterance runs eSpeak in its own process).
    Returns:
        The :class:`Corpus` paths.
    Raises:
        ValueError: unknown task, non-positive sizes, or a non-empty split directory.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    sizes = dict(num_train=num_train, num_dev=num_dev, num_test=num_test, num_lm_sentences=num_lm_sentences,
                 num_workers=num_workers)
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    root = Path(output_dir)
    voices = assign_voices(num_dev_voices, num_test_voices, seed)
    rng = np.random.default_rng([seed, 2])
    test_sentences, dev_sentences = draw_held_out(rng, num_dev, num_test)
    held_out = {words for _, words in test_sentences + dev_sentences}
    train_sentences = draw_sentences(rng, num_train, exclude=held_out)
    lm_sentences = draw_sentences(rng, num_lm_sentences, exclude=held_out)

    plans = {split: plan_split(split, sentences, voices[split], rng)
             for split, sentences in (("train", train_sentences), ("dev", dev_sentences),
                                      ("test", test_sentences))}
    paths: Dict[str, Path] = {}
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for split in SPLITS:
            specs = plans[split]
            waveforms = list(pool.map(render, specs))
            utterances = [Utterance(spec.utt_id, spec.speaker, wave, _text_of(spec, task))
                          for spec, wave in zip(specs, waveforms)]
            paths[split] = write_data_dir(root / split, utterances)
            if task == "slu":
                write_text(paths[split], {spec.utt_id: spec.words for spec in specs}, filename="transcript")

    lm_text = root / "lm_train.txt"
    with open(lm_text, "w", encoding="utf-8") as f:
        for index, (intent, words) in enumerate(lm_sentences):
            f.write(f"lm-{index:06d} {words if task == 'asr' else f'{intent} {words}'}\n")
        for spec in plans["train"]:
            f.write(f"{spec.utt_id} {_text_of(spec, task)}\n")

    nlsyms = None
    if task == "slu":
        nlsyms = root / "nlsyms.txt"
        nlsyms.write_text("".join(f"{intent}\n" for intent in intents()), encoding="utf-8")

    summary = dict(task=task, seed=seed, voices=voices, **{k: v for k, v in sizes.items() if k != "num_workers"},
                   hours={split: _hours(paths[split]) for split in SPLITS})
    (root / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return Corpus(root=root, lm_text=lm_text, nlsyms=nlsyms, task=task, **paths)


def make_pretraining_audio(output_dir: PathLike, num_utterances: int = 4000, num_dev: int = 100,
                           num_test: int = 100, num_dev_voices: int = 6, num_test_voices: int = 10, seed: int = 0,
                           num_workers: int = 2) -> Path:
    """Unlabelled audio for pretraining the SSL stand-in, apart from the corpus of ``seed``.

    The sentences are drawn from their own random stream and exclude the dev and test
    sentences of :func:`make_corpus` with the same sizes and seed; the speakers are new ones
    (their own rate and pitch) built on that corpus's training voice variants, so that the
    dev and test voices stay unheard. Pretraining reads only ``wav.scp``; the ``text`` file
    exists because a Kaldi data directory needs it.

    Args:
        output_dir: the data directory to write (``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``wavs/``).
        num_utterances: utterances to synthesise.
        num_dev, num_test, num_dev_voices, num_test_voices, seed: those of the fine-tuning corpus.
        num_workers: parallel synthesis processes.
    Returns:
        ``output_dir`` as a Path.
    """
    if isinstance(num_utterances, bool) or not isinstance(num_utterances, int) or num_utterances < 1:
        raise ValueError(f"num_utterances must be a positive int, got {num_utterances!r}")
    voices = assign_voices(num_dev_voices, num_test_voices, seed)["train"]
    test, dev = draw_held_out(np.random.default_rng([seed, 2]), num_dev, num_test)
    rng = np.random.default_rng([seed, 3])
    sentences = draw_sentences(rng, num_utterances, exclude={words for _, words in test + dev})
    specs = plan_split("pretrain", sentences, voices, rng)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        waveforms = list(pool.map(render, specs))
    return write_data_dir(output_dir, [Utterance(spec.utt_id, spec.speaker, wave, spec.words)
                                       for spec, wave in zip(specs, waveforms)])


def _hours(data_dir: Path) -> float:
    total = 0
    for line in (data_dir / "wav.scp").read_text(encoding="utf-8").splitlines():
        total += soundfile.info(line.split(maxsplit=1)[1]).frames
    return round(total / 16000 / 3600, 4)



def get_parser() -> argparse.ArgumentParser:
    """Options of ``python -m espnet_prune.demo.corpus``: those of :func:`make_corpus`."""
    parser = argparse.ArgumentParser(
        description="Synthesise the demo corpus (asr.sh stage 1, local/data.sh): Kaldi data dirs "
                    "train/dev/test, lm_train.txt and corpus.json in --output_dir.")
    parser.add_argument("--output_dir", required=True, help="where to write (e.g. data)")
    parser.add_argument("--task", choices=TASKS, default="asr")
    parser.add_argument("--unlabelled", type=int, default=0, metavar="N",
                        help="instead of the corpus, write N utterances of pretraining audio into --output_dir "
                             "(make_pretraining_audio: other sentences and speakers than the corpus of the same "
                             "sizes and seed)")
    for name, parameter in inspect.signature(make_corpus).parameters.items():
        if parameter.annotation is int:
            parser.add_argument(f"--{name}", type=int, default=parameter.default,
                                help=f"default: {parameter.default}")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = vars(get_parser().parse_args(cmd))
    unlabelled = args.pop("unlabelled")
    if unlabelled:
        keys = ("num_dev", "num_test", "num_dev_voices", "num_test_voices", "seed", "num_workers")
        data_dir = make_pretraining_audio(args["output_dir"], unlabelled, **{key: args[key] for key in keys})
        print(f"pretraining audio in {data_dir}")
        return
    corpus = make_corpus(args.pop("output_dir"), **args)
    print(f"corpus in {corpus.root}: {', '.join(str(corpus.split(split)) for split in SPLITS)}, {corpus.lm_text}")


if __name__ == "__main__":
    main()
