"""The voice analyzer: speech windows in, vocal-emotion scores out, for every entry point.

Each job's payload is one window of float32 mono samples at 16 kHz, exactly as long as the
card's ``window_seconds`` (the windower, ``stream/windows.py``, makes them). Log-mel
features are computed in numpy (``models/logmel.py``, the function training used) and
every window of the batch, whichever session or track it came from, goes to one ONNX
Runtime call. A window of the wrong type, shape or with NaNs fails alone.

Without a voice model the process reports voice as unavailable with the commands that make
one (``emostream models pull voice-emotion``, ``emostream train voice``: the repository's
hint) and faces go on; it never serves random weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

from emostream.modalities.base import Service
from emostream.models.classifier_analyzer import ClassifierAnalyzer
from emostream.models.drift import DriftConfig
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, RunnerConfig
from emostream.models.vad import Vad, create_vad
from emostream.pipeline.jobs import Job
from emostream.pipeline.outcomes import Outcome, Scored, VoiceScores, fail

if TYPE_CHECKING:
    from emostream.settings import Settings
    from emostream.stream.windows import Windower

log = logging.getLogger(__name__)


class VoiceModelConfig(BaseModel):
    """``EMOSTREAM_VOICE__*``: the voice-emotion model, its VAD and when a window is speech."""

    enabled: bool = Field(
        default=True,
        description="serve voice where a voice model exists; false: audio tracks are "
        "ignored and no voice model is loaded",
    )
    model: str = Field(default="voice-emotion", description="model name in the repository")
    alias: str = Field(default="production", description="the alias (or version) to serve")
    watch_interval_s: float = Field(
        default=1.0,
        ge=0.0,
        description="how often a running process looks for a new version of the alias in "
        "aliases.json, to switch to it; 0 = never switch",
    )
    vad: Literal["silero", "webrtc"] = Field(
        default="silero",
        description="voice activity detector: silero (ONNX from the silero-vad wheel, "
        "`emostream models pull voice-activity`) or webrtc (webrtcvad-wheels); "
        "docs/BENCHMARKS.md compares them",
    )
    vad_threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="a VAD frame is speech at this probability"
    )
    vad_model: str = Field(default="voice-activity", description="silero: the model's name")
    vad_version: str = Field(default="production", description="silero: its alias or version")
    webrtc_mode: int = Field(
        default=1,
        ge=0,
        le=3,
        description="webrtc: aggressiveness, 0 (least) to 3 (most); 1 kept the most speech "
        "in noise on RAVDESS (docs/BENCHMARKS.md)",
    )
    min_speech: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="a window is classified when at least this share of its VAD frames "
        "are speech; otherwise it is reported with speech: false and no scores",
    )
    max_gap_s: float = Field(
        default=0.25,
        gt=0.0,
        description="audio whose media time jumps by more than this restarts the windows "
        "at the new time, so no window spans a gap",
    )


def bad_window(payload: np.ndarray, samples: int) -> str | None:
    """Why a payload is not one window of ``samples`` finite float32 samples (else None)."""
    if payload.dtype != np.float32 or payload.ndim != 1:
        return f"bad window {payload.shape} {payload.dtype}: want ({samples},) float32"
    if payload.shape[0] != samples:
        return f"window of {payload.shape[0]} samples, the model takes {samples}"
    if not np.isfinite(payload).all():
        return "window holds NaN or infinite samples"
    return None


class VoiceAnalyzer(ClassifierAnalyzer):
    """Classifier + the model's tally: the ``Analyzer`` of the voice modality."""

    modality = "voice"

    def __init__(self, classifier: Classifier, drift: DriftConfig | None = None) -> None:
        self.spec = classifier.audio  # TypeError for an image card
        super().__init__(classifier, drift)

    @classmethod
    def load(
        cls,
        repo: ModelRepository,
        model: VoiceModelConfig,
        runner: RunnerConfig,
        drift: DriftConfig | None = None,
    ) -> VoiceAnalyzer:
        """The model an alias names (raises ModelMissingError, with the train command)."""
        return cls(Classifier.from_repository(repo, model.model, model.alias, runner), drift)

    @classmethod
    def from_settings(cls, settings: Settings) -> VoiceAnalyzer:
        return cls.load(
            ModelRepository(settings.model_root), settings.voice, settings.runner, settings.drift
        )

    def rebuilt(self, classifier: Classifier, drift: DriftConfig | None) -> VoiceAnalyzer:
        """The analyzer of a promoted version (``models/watch.py``)."""
        return VoiceAnalyzer(classifier, drift)

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Check each window, score the good ones in one model call."""
        out: dict[int, Outcome] = {}
        live: list[int] = []
        samples = self.spec.window_samples
        for i, job in enumerate(jobs):
            problem = bad_window(job.payload, samples)
            rate = job.window.sample_rate
            if problem is None and rate != self.spec.sample_rate:
                problem = f"window at {rate} Hz, the model takes {self.spec.sample_rate}"
            if problem is not None:
                out[i] = fail(job, problem)
            else:
                live.append(i)
        if live:
            waves = np.stack([jobs[i].payload for i in live])
            scores = self.classifier.predict_windows(waves)
            for i, row in zip(live, scores, strict=True):
                out[i] = Scored(
                    jobs[i].header(), self.model, VoiceScores(row[None, :], self.classes)
                )
        return [out[i] for i in range(len(jobs))]


@dataclass
class VoiceService(Service):
    """What a process needs for voice: the analyzer (its card gives window and hop), the
    VAD and the windowing settings; or, when either is missing, ``unavailable`` saying why
    and what makes it. Sessions (``windower``) and ``emostream analyze`` use the same."""

    analyzer: VoiceAnalyzer | None = None
    vad: Vad | None = None
    config: VoiceModelConfig = field(default_factory=VoiceModelConfig)

    @classmethod
    def load(cls, settings: Settings, *, vad: bool = True) -> VoiceService:
        """Load both (``vad`` False: the analyzer only, as a worker needs); never raises
        for a missing model: voice is then unavailable and faces go on."""
        if not settings.voice.enabled:
            return cls(unavailable="voice is off (voice.enabled=false)", config=settings.voice)
        try:
            analyzer = VoiceAnalyzer.from_settings(settings)
            detector = create_vad(settings.voice, settings.model_root) if vad else None
        except (LookupError, ValueError, OSError, ImportError) as exc:
            log.warning("voice unavailable: %s", exc)
            return cls(unavailable=str(exc), config=settings.voice)
        log.info(
            "voice: %s on %s%s",
            analyzer.model,
            analyzer.provider,
            f", VAD {detector.name}" if detector is not None else "",
        )
        return cls(analyzer=analyzer, vad=detector, config=settings.voice)

    @property
    def serving(self) -> VoiceAnalyzer | None:
        """The analyzer serving now: the slot's (a promotion swaps it), else the loaded one."""
        if self.slot is not None:
            served: VoiceAnalyzer = self.slot.analyzer
            return served
        return self.analyzer

    def windower(self) -> Windower:
        """A new track's windows: the VAD, and the window and hop of the version serving
        at that moment (raises ``LookupError`` when voice is unavailable)."""
        from emostream.stream.windows import Windower

        analyzer = self.serving
        if analyzer is None or self.vad is None:
            raise LookupError(f"voice is unavailable: {self.unavailable}")
        return Windower.for_model(self.vad, analyzer.spec, self.config)

    def status(self) -> dict[str, object]:
        """For /readyz: what serves voice, or why nothing does."""
        analyzer = self.serving
        if analyzer is None:
            return {"available": False, "reason": self.unavailable}
        return {
            "available": True,
            "model": analyzer.model,
            "vad": None if self.vad is None else self.vad.name,
        }
