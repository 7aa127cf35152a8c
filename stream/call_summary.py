"""What happened in a call, per speaker role: the summary a supervisor (or a CRM) reads.

A session's ``CallRecord`` sees every voice message it sends (speech and silent windows)
and the audio of the tracks whose role is not analysed (counted in seconds, never
decoded), and builds a ``CallSummary`` on request: per role, seconds of audio and of
speech, the share of speech windows per class, the mean scores, the dominant class, a
timeline of class shares per ``BIN_S`` seconds, the longest run of each non-neutral class,
plus the model versions used and the platform's ids. A window sent ``unsure`` (its top
probability under ``results.unsure_below``) is counted apart, in ``unsure``: it has no class
in the shares, the dominant class, the timeline or the runs (its scores are in the mean). Served by
``GET /v1/sessions/{id}/summary`` during the call and for ``calls.keep_s`` after it, and
POSTed to ``calls.webhook_url`` when it ends (``stream/webhook.py``).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from emostream.schema import BaseMessage, VoiceMessage

BIN_S = 5.0  # the timeline's bin
NEUTRAL = frozenset({"neutral", "calm"})  # no "longest run" for these


class Span(BaseModel):
    start: float
    end: float


class TimelineBin(BaseModel):
    start: float
    end: float
    classes: dict[str, float] = Field(description="share of this bin's speech windows")
    unsure: float | None = Field(
        default=None, description="share of this bin's speech windows that were unsure"
    )


class RoleSummary(BaseModel):
    analysed: bool
    audio_s: float = Field(description="seconds of audio received for this role")
    speech_s: float | None = Field(default=None, description="seconds inside speech windows")
    windows: int | None = Field(default=None, description="speech windows classified")
    unsure: int | None = Field(
        default=None,
        description="of those, the windows sent unsure (top probability under "
        "results.unsure_below): in no class of classes, dominant, timeline or longest",
    )
    classes: dict[str, float] | None = Field(
        default=None, description="share of the speech windows in each class (unsure ones in none)"
    )
    mean_scores: dict[str, float] | None = Field(
        default=None, description="each class's score averaged over every speech window"
    )
    dominant: str | None = Field(default=None, description="the most frequent class, if any")
    timeline: list[TimelineBin] | None = None
    longest: dict[str, Span] | None = Field(
        default=None, description="the longest run of consecutive windows of each class"
    )
    tracks: list[str] = Field(default_factory=list)


class CallSummary(BaseMessage):
    """The summary of one call (``schema`` 1): the webhook body and the summary endpoint."""

    type: Literal["summary"] = "summary"
    session: str
    transport: str
    ids: dict[str, str] = Field(default_factory=dict, description="the platform's ids")
    started: float = Field(description="Unix time the session started")
    ended: float | None = Field(default=None, description="Unix time it ended; none: live")
    models: list[str] = Field(default_factory=list)
    roles: dict[str, RoleSummary] = Field(default_factory=dict)


@dataclass
class _Window:
    start: float
    end: float
    label: str | None  # None: unsure
    scores: dict[str, float]


@dataclass
class _Role:
    tracks: dict[str, float] = field(default_factory=dict)  # track -> media seconds seen
    speech: list[tuple[str, _Window]] = field(default_factory=list)
    unanalysed_s: float = 0.0


class CallRecord:
    """Accumulates one session's call; ``summary()`` at any time."""

    def __init__(self, session: str, transport: str, analysed: frozenset[str]) -> None:
        self.session = session
        self.transport = transport
        self.analysed = analysed
        self.ids: dict[str, str] = {}
        self.started = time.time()
        self.ended: float | None = None
        self.models: set[str] = set()
        self._roles: defaultdict[str, _Role] = defaultdict(_Role)

    def add(self, msg: VoiceMessage) -> None:
        """A voice message the session sent (a speech window or a silent one)."""
        role = self._roles[msg.role or "unknown"]
        track = msg.track or ""
        role.tracks[track] = max(role.tracks.get(track, 0.0), msg.end)
        if msg.speech and msg.label:
            label = None if msg.unsure else msg.label
            role.speech.append((track, _Window(msg.start, msg.end, label, msg.scores)))
            if msg.model:
                self.models.add(msg.model)

    def unanalysed_audio(self, role: str, track: str, seconds: float) -> None:
        """Audio of a track whose role is not analysed: counted, nothing else."""
        entry = self._roles[role]
        entry.unanalysed_s += seconds
        entry.tracks.setdefault(track, 0.0)

    def summary(self) -> CallSummary:
        return CallSummary(
            session=self.session,
            transport=self.transport,
            ids=dict(self.ids),
            started=round(self.started, 3),
            ended=None if self.ended is None else round(self.ended, 3),
            models=sorted(self.models),
            roles={name: self._role(name, r) for name, r in sorted(self._roles.items())},
        )

    def _role(self, name: str, r: _Role) -> RoleSummary:
        audio_s = round(sum(r.tracks.values()) + r.unanalysed_s, 3)
        if name not in self.analysed:
            return RoleSummary(analysed=False, audio_s=audio_s, tracks=sorted(r.tracks))
        windows = [w for _, w in r.speech]
        out = RoleSummary(
            analysed=True,
            audio_s=audio_s,
            speech_s=round(_speech_seconds(r.speech), 3),
            windows=len(windows),
            tracks=sorted(r.tracks),
        )
        if not windows:
            return out
        counts = Counter(w.label for w in windows if w.label is not None)
        out.unsure = len(windows) - counts.total()
        out.classes = _shares(counts, len(windows))
        labels = sorted({k for w in windows for k in w.scores})
        out.mean_scores = {
            k: round(sum(w.scores.get(k, 0.0) for w in windows) / len(windows), 5) for k in labels
        }
        out.dominant = counts.most_common(1)[0][0] if counts else None
        out.timeline = _timeline(windows)
        out.longest = _longest(r.speech)
        return out


def _shares(counts: Counter[str], total: int) -> dict[str, float]:
    return {k: round(v / total, 4) for k, v in sorted(counts.items())}


def _speech_seconds(speech: list[tuple[str, _Window]]) -> float:
    """The union of each track's speech windows (they overlap by window minus hop)."""
    total = 0.0
    by_track: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    for track, w in speech:
        by_track[track].append((w.start, w.end))
    for spans in by_track.values():
        spans.sort()
        start, end = spans[0]
        for s, e in spans[1:]:
            if s > end:
                total += end - start
                start, end = s, e
            else:
                end = max(end, e)
        total += end - start
    return total


def _timeline(windows: list[_Window]) -> list[TimelineBin]:
    bins: defaultdict[int, list[_Window]] = defaultdict(list)
    for w in windows:
        bins[int(w.start // BIN_S)].append(w)
    out = []
    for k, ws in sorted(bins.items()):
        counts = Counter(w.label for w in ws if w.label is not None)
        unsure = len(ws) - counts.total()
        out.append(
            TimelineBin(
                start=k * BIN_S,
                end=(k + 1) * BIN_S,
                classes=_shares(counts, len(ws)),
                unsure=round(unsure / len(ws), 4) if unsure else None,
            )
        )
    return out


def _longest(speech: list[tuple[str, _Window]]) -> dict[str, Span]:
    """Per non-neutral class, its longest run of consecutive windows of one track (each
    starting before the previous one ended): where a supervisor should listen."""
    best: dict[str, Span] = {}
    by_track: defaultdict[str, list[_Window]] = defaultdict(list)
    for track, window in speech:
        by_track[track].append(window)

    def close(run: list[_Window]) -> None:
        label = run[0].label if run else None
        if label is not None and label not in NEUTRAL:
            span = Span(start=run[0].start, end=run[-1].end)
            old = best.get(label)
            if old is None or span.end - span.start > old.end - old.start:
                best[label] = span

    for windows in by_track.values():
        windows.sort(key=lambda w: w.start)
        run: list[_Window] = []
        for w in windows:
            if run and w.label == run[-1].label and w.start <= run[-1].end:
                run.append(w)
                continue
            close(run)
            run = [w]
        close(run)
    return dict(sorted(best.items()))
