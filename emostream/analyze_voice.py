"""Offline voice: an audio file (or a video's audio) in, one voice message per window out.

The samples go through the windower a live track uses (``stream/windows.py``: the same
VAD, window and hop), and speech windows through ``run_batch`` with the voice analyzer,
the real-time worker's path, in batches of ``BATCH``; silent windows are reported with
``speech: false`` and never classified.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from emostream.models.voice import VoiceService
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import Job, VoiceInfo
from emostream.pipeline.messages import silence_message, voice_message
from emostream.pipeline.outcomes import Failed, Scored
from emostream.schema import VoiceMessage
from emostream.stream.audio import read_audio
from emostream.stream.media import MediaError
from emostream.stream.windows import Window, file_windows

BATCH = 32  # windows per model call
TRACK = "0"  # a file's first audio stream


def _scored(
    tools: VoiceService, batch: list[tuple[int, Window]], source: str, t0: float
) -> Iterator[VoiceMessage]:
    jobs = [
        Job("", seq, w.start, w.samples, VoiceInfo(TRACK, w.start, w.end), created=t0)
        for seq, w in batch
    ]
    assert tools.analyzer is not None, "analyze_audio needs a loaded voice analyzer"
    for outcome in run_batch(tools.analyzer, jobs):
        if not isinstance(outcome, Scored):
            why = outcome.error if isinstance(outcome, Failed) else outcome.reason.value
            raise MediaError("analysis_failed", f"{source}: {why}")
        yield voice_message(outcome, latency_s=time.monotonic() - t0, source=source)


def analyze_audio(tools: VoiceService, path: Path, max_seconds: float) -> Iterator[VoiceMessage]:
    """One message per window of ``path``'s first audio stream, in time order."""
    source = str(path)
    t0 = time.monotonic()
    samples = read_audio(path, max_seconds=max_seconds)
    windower = tools.windower()
    speech: list[tuple[int, Window]] = []
    for seq, window in enumerate(file_windows(samples, windower)):
        if not window.speech:  # keep time order: score the speech before this one first
            if speech:
                yield from _scored(tools, speech, source, t0)
                speech = []
            info = VoiceInfo(TRACK, window.start, window.end)
            yield silence_message(info, latency_s=time.monotonic() - t0, source=source)
            continue
        speech.append((seq, window))
        if len(speech) == BATCH:
            yield from _scored(tools, speech, source, t0)
            speech = []
    if speech:
        yield from _scored(tools, speech, source, t0)
