"""Offline voice: a recording (a file, a video's audio, an upload) in, one voice message per
window of each analysed track out, and optionally the call's summary.

The recording is decoded as a stream (``stream/audio.py: ChannelReader``: a second of
samples at a time), and each chunk is pushed into the track's windower, the one a live
track uses (``stream/windows.py``: the same VAD, window and hop), so an hour of audio
costs the memory of a minute and a call and its recording give the same windows. Speech
windows go through ``run_batch`` with the voice analyzer, the real-time worker's path, in
batches of ``BATCH``; silent windows are reported with ``speech: false`` and never
classified. A track whose role is not analysed (``calls.analyse_roles``) gets no windows,
only its seconds in the summary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from emostream.models.voice import VoiceService
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import Job, VoiceInfo
from emostream.pipeline.messages import silence_message, voice_message
from emostream.pipeline.outcomes import Failed, Scored
from emostream.schema import VoiceMessage
from emostream.stream.audio import Channel, ChannelReader, open_media
from emostream.stream.call_summary import CallRecord
from emostream.stream.media import MediaError
from emostream.stream.windows import Window, Windower

BATCH = 32  # windows per model call
TRACK = "0"  # a file's audio, all channels mixed: its one track
Pending = list[tuple[int, Window, VoiceInfo]]


def _scored(
    tools: VoiceService, batch: Pending, unsure_below: float, source: str | None, t0: float
) -> Iterator[VoiceMessage]:
    jobs = [Job("", seq, w.start, w.samples, info, created=t0) for seq, w, info in batch]
    analyzer = tools.serving
    assert analyzer is not None, "analyze_recording needs a loaded voice analyzer"
    for outcome in run_batch(analyzer, jobs):
        if not isinstance(outcome, Scored):
            why = outcome.error if isinstance(outcome, Failed) else outcome.reason.value
            raise MediaError("analysis_failed", f"{source or 'the recording'}: {why}")
        yield voice_message(
            outcome,
            latency_s=time.monotonic() - t0,
            unsure_below=unsure_below,
            source=source,
        )


def analyze_recording(
    tools: VoiceService,
    reader: ChannelReader,
    unsure_below: float,
    source: str | None = None,
    record: CallRecord | None = None,
) -> Iterator[VoiceMessage]:
    """One message per window of each analysed track of ``reader``, speech scored in
    batches and each batch said before a later silent window (so each track's messages
    are in time order); every message also goes to ``record``, and at the end the seconds
    of each track that was not analysed."""
    t0 = time.monotonic()
    tracks = reader.tracks
    windowers: dict[int, Windower] = {
        i: tools.windower() for i, t in enumerate(tracks) if t.analysed
    }
    speech: Pending = []
    seq = 0

    def said(msgs: Iterator[VoiceMessage]) -> Iterator[VoiceMessage]:
        for msg in msgs:
            if record is not None:
                record.add(msg)
            yield msg

    def windows(i: int, found: list[Window]) -> Iterator[VoiceMessage]:
        nonlocal speech, seq
        for window in found:
            info = VoiceInfo(tracks[i].name, window.start, window.end, role=tracks[i].role)
            if not window.speech:  # keep time order: score the speech before this one first
                if speech:
                    yield from said(_scored(tools, speech, unsure_below, source, t0))
                    speech = []
                latency = time.monotonic() - t0
                yield from said(iter((silence_message(info, latency_s=latency, source=source),)))
                continue
            speech.append((seq, window, info))
            seq += 1
            if len(speech) == BATCH:
                yield from said(_scored(tools, speech, unsure_below, source, t0))
                speech = []

    started: set[int] = set()
    for i, samples in reader.chunks():
        yield from windows(i, windowers[i].push(samples, None if i in started else 0.0))
        started.add(i)
    if reader.seconds == 0:
        raise MediaError("no_audio", f"{source or 'the recording'}: its audio holds no samples")
    for i, windower in windowers.items():
        yield from windows(i, windower.flush())
    if speech:
        yield from said(_scored(tools, speech, unsure_below, source, t0))
    if record is not None:
        for track in tracks:
            if not track.analysed:
                record.unanalysed_audio(track.role, track.name, round(reader.seconds, 3))


def analyze_audio(
    tools: VoiceService,
    path: Path,
    max_seconds: float,
    unsure_below: float,
    tracks: Sequence[Channel] = (Channel(TRACK),),
    record: CallRecord | None = None,
) -> Iterator[VoiceMessage]:
    """One message per window of each analysed track of ``path``'s first audio stream
    (by default one track, its channels mixed), decoded as a stream."""
    with open_media(path) as container:
        reader = ChannelReader(container, tracks, max_seconds=max_seconds, source=str(path))
        yield from analyze_recording(tools, reader, unsure_below, str(path), record)
