"""Speech emotion corpora by their file names: RAVDESS, TESS, CREMA-D, EMO-DB and nEMO.

Each reader turns a folder into clips (path, speaker, emotion in one vocabulary); the
emotion and the speaker are in the file name in all four, so no metadata file is needed.
Audio is decoded by the stream's own reader (any container, any rate, to 16 kHz mono),
so a user's 48 kHz WAV copy of RAVDESS and the shared 16 kHz FLAC give the same samples.
Splits are by speaker: no speaker ever has clips on two sides.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    from emostream.training.voice_config import VoiceTrainConfig

from emostream.stream.audio import AUDIO_SUFFIXES, SAMPLE_RATE, read_audio

#: The voice model's classes, alphabetical (the ONNX output order): RAVDESS's eight.
CLASSES = ("angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised")
#: The common vocabulary: the model's classes plus what other corpora add (EMO-DB's boredom).
VOCABULARY = (*CLASSES, "bored")

_RAVDESS = re.compile(r"^03-0[12]-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_RAVDESS_EMOTIONS = {
    f"0{i + 1}": e
    for i, e in enumerate(
        ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    )
}
_TESS = re.compile(r"^(OAF|YAF)_([A-Za-z]+)_([A-Za-z]+)$")
_TESS_EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprised",
    "sad": "sad",
}
_CREMA = re.compile(r"^(1\d\d\d)_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_CREMA_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
_EMODB = re.compile(r"^(\d\d)([a-b]\d\d)([WLEAFTN])([a-z])$")
_EMODB_EMOTIONS = {
    "W": "angry",
    "L": "bored",
    "E": "disgust",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}


_NEMO = re.compile(r"^([A-Z]{2}\d)_([a-z]+)_(\d+)$")
_NEMO_EMOTIONS = {
    "anger": "angry",
    "fear": "fearful",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprised": "surprised",
}

#: the model's classes each corpus labels (nEMO has no calm and no disgust)
CORPUS_CLASSES: dict[str, tuple[str, ...]] = {
    "ravdess": CLASSES,
    "tess": tuple(c for c in CLASSES if c != "calm"),
    "crema-d": ("angry", "disgust", "fearful", "happy", "neutral", "sad"),
    "emo-db": ("angry", "disgust", "fearful", "happy", "neutral", "sad"),
    "nemo": ("angry", "fearful", "happy", "neutral", "sad", "surprised"),
}


class DataError(ValueError):
    """The folder holds no corpus we can read by its file names; says what was expected."""


@dataclass(frozen=True)
class Clip:
    path: Path
    speaker: str  # unique across corpora: "<corpus>:<id>"
    emotion: str  # one of VOCABULARY
    corpus: str


Parser = Callable[[Path], Clip | None]


def parse_ravdess(path: Path) -> Clip | None:
    """``03-01-EE-II-SS-RR-AA``: modality audio, speech or song, emotion EE, actor AA."""
    m = _RAVDESS.match(path.stem)
    if m is None or m.group(1) not in _RAVDESS_EMOTIONS:
        return None
    return Clip(path, f"ravdess:{m.group(5)}", _RAVDESS_EMOTIONS[m.group(1)], "ravdess")


def parse_tess(path: Path) -> Clip | None:
    """``OAF_back_angry``: speaker (older / younger actress), word, emotion (ps = pleasant
    surprise)."""
    m = _TESS.match(path.stem)
    emotion = None if m is None else _TESS_EMOTIONS.get(m.group(3).lower())
    if m is None or emotion is None:
        return None
    return Clip(path, f"tess:{m.group(1)}", emotion, "tess")


def parse_crema(path: Path) -> Clip | None:
    """``1001_DFA_ANG_XX``: actor, sentence, emotion, intensity."""
    m = _CREMA.match(path.stem)
    if m is None or m.group(3) not in _CREMA_EMOTIONS:
        return None
    return Clip(path, f"crema-d:{m.group(1)}", _CREMA_EMOTIONS[m.group(3)], "crema-d")


def parse_emodb(path: Path) -> Clip | None:
    """``03a01Fa``: speaker, text, emotion letter (German initials), variant."""
    m = _EMODB.match(path.stem)
    if m is None:
        return None
    return Clip(path, f"emo-db:{m.group(1)}", _EMODB_EMOTIONS[m.group(3)], "emo-db")


def parse_nemo(path: Path) -> Clip | None:
    """``EB0_anger_1``: speaker (two letters and a digit), emotion (English noun), sentence."""
    m = _NEMO.match(path.stem)
    emotion = None if m is None else _NEMO_EMOTIONS.get(m.group(2))
    if m is None or emotion is None:
        return None
    return Clip(path, f"nemo:{m.group(1)}", emotion, "nemo")


PARSERS: dict[str, Parser] = {
    "ravdess": parse_ravdess,
    "tess": parse_tess,
    "crema-d": parse_crema,
    "emo-db": parse_emodb,
    "nemo": parse_nemo,
}


def trains_on(cfg: VoiceTrainConfig, clip: Clip) -> bool:
    """Whether the run trains on ``clip``'s corpus (``data.train_corpora``)."""
    wanted = cfg.data.train_corpora
    return wanted is None or clip.corpus in wanted


def may_mean(clip: Clip) -> set[str]:
    """The model's classes a clip's label may mean: in a corpus without ``calm`` an actor
    asked for neutral may sound calm, so there ``neutral`` means neutral or calm."""
    if clip.emotion == "neutral" and "calm" not in CORPUS_CLASSES[clip.corpus]:
        return {"neutral", "calm"}
    return {clip.emotion}


def allowed(clips: Sequence[Clip], classes: Sequence[str] = CLASSES) -> np.ndarray:
    """(N, classes) bool: the classes each clip's label may mean (``losses.py``)."""
    return np.array([[c in may_mean(clip) for c in classes] for clip in clips], dtype=bool)


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def scan_all(roots: Sequence[Path], corpus: str = "auto") -> list[Clip]:
    """Every clip of every folder (one corpus each, or several), in the order given."""
    return [clip for root in roots for clip in scan(root, corpus)]


def scan(root: Path, corpus: str = "auto") -> list[Clip]:
    """Every audio file under ``root`` that one corpus's naming explains.

    ``auto`` tries each naming on every file; files no naming explains are skipped, but a
    folder where none is explained is a DataError that names the formats we read."""
    if not root.is_dir():
        raise DataError(
            f"{root}: not a folder (expected RAVDESS, TESS, CREMA-D, EMO-DB or nEMO audio)"
        )
    if corpus != "auto" and corpus not in PARSERS:
        raise DataError(f"unknown corpus {corpus!r}; known: auto, {', '.join(PARSERS)}")
    parsers = list(PARSERS.values()) if corpus == "auto" else [PARSERS[corpus]]
    files = _audio_files(root)
    clips = []
    for f in files:
        for parse in parsers:
            clip = parse(f)
            if clip is not None:
                clips.append(clip)
                break
    if not clips:
        raise DataError(
            f"{root}: none of its {len(files)} audio files is named the way RAVDESS "
            "(03-01-05-01-01-01-12.wav), TESS (OAF_back_angry.wav), CREMA-D "
            "(1001_DFA_ANG_XX.wav), EMO-DB (03a01Fa.wav) or nEMO (EB0_anger_1.wav) name theirs"
        )
    return clips


def keep_classes(clips: Iterable[Clip], classes: Sequence[str] = CLASSES) -> list[Clip]:
    """The clips whose emotion the model has (EMO-DB's boredom has no RAVDESS class)."""
    return [c for c in clips if c.emotion in classes]


@dataclass(frozen=True)
class SpeakerSplit:
    train: list[Clip]
    val: list[Clip]
    test: list[Clip]

    def speakers(self, part: str) -> set[str]:
        clips: list[Clip] = getattr(self, part)
        return {c.speaker for c in clips}


def speaker_split(clips: Sequence[Clip], test: Sequence[str], val: Sequence[str]) -> SpeakerSplit:
    """Named speakers (``ravdess:17`` or just ``17``) to test and val, the rest to train."""

    def full(ids: Sequence[str]) -> set[str]:
        known = {c.speaker for c in clips}
        out = set()
        for s in ids:
            match = {k for k in known if k == s or k.split(":", 1)[1] == s}
            if not match:
                raise DataError(f"speaker {s!r} is not in the data ({len(known)} speakers)")
            out |= match
        return out

    t, v = full(test), full(val)
    if t & v:
        raise DataError(f"speakers {sorted(t & v)} are named for both test and val")
    split = SpeakerSplit(
        train=[c for c in clips if c.speaker not in t | v],
        val=[c for c in clips if c.speaker in v],
        test=[c for c in clips if c.speaker in t],
    )
    if not split.train:
        raise DataError("no speaker is left for training once test and val are taken")
    return split


def describe(clips: Sequence[Clip]) -> str:
    counts = Counter(c.emotion for c in clips)
    return f"{len(clips)} clips, {len({c.speaker for c in clips})} speakers, " + ", ".join(
        f"{k} {counts[k]}" for k in sorted(counts)
    )


def load_waves(
    clips: Sequence[Clip], progress: bool = True, desc: str = "decoding"
) -> list[np.ndarray]:
    """16 kHz mono float32 samples of each clip (a file FFmpeg cannot read is a DataError)."""
    from emostream.stream.media import MediaError

    out = []
    for c in tqdm(clips, desc=desc, unit="clip", disable=not progress):
        try:
            out.append(read_audio(c.path, rate=SAMPLE_RATE, max_seconds=60.0))
        except MediaError as exc:
            raise DataError(str(exc)) from None
    return out


def speech_span(
    wave: np.ndarray, rate: int = SAMPLE_RATE, floor_db: float = 35.0
) -> tuple[int, int]:
    """(start, end) samples from the first to the last 25 ms frame within ``floor_db`` of the
    loudest: RAVDESS clips hold up to a second of silence at each end, which has no label."""
    frame = rate // 40
    n = len(wave) // frame
    if n < 2:
        return 0, len(wave)
    rms = np.sqrt(np.mean(wave[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms / rms.max())
    loud = np.flatnonzero(db > -floor_db)
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)
