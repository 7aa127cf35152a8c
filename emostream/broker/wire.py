"""Jobs and outcomes as Redis stream entries: flat binary fields, no JSON around pixels.

A face job entry carries the fields of ``Job`` and its ``FrameInfo`` (source size, scale,
whether to detect) as short text fields, and the downscaled BGR frame either as JPEG
(default, quality 90: about 25-60 kB for a 640x360 frame, see docs/ARCHITECTURE.md) or raw
``uint8`` bytes with its shape (``raw``: exact, 691 kB at 640x360). A voice job entry
carries its ``VoiceInfo`` (track, start, end, rate) and the window's samples as
little-endian float32 (``f32``, exact: 96 kB for 1.5 s at 16 kHz) or int16 PCM (``s16``,
half that, quantised to 16 bits as a call's audio already is). An outcome entry says its
``kind`` (scored, dropped, failed) and carries boxes (faces only) and scores as packed
little-endian arrays. Nothing is base64-encoded.

Times on the wire are wall-clock seconds (``time.time()``): ``time.monotonic()`` means
nothing on another machine. Each side converts at its edge, so a result's ``created``
comes back to the ingest node on its own clock and end-to-end latency is exact even when
the worker's clock is off; only the deadline check on the worker depends on clocks being
synchronised (NTP).

The envelope (version, session, seq, times, routing, outcome kind) is this module's; what a
modality puts in an entry (its job info, its payload, its scores) is its spec's
(``emostream/modalities``), built from the readers and codecs of ``codecs.py``.

Reading is validation: every entry is checked at this edge (version, known field names,
modality, integer and finite ranges, text lengths, a frame's size from its JPEG header or
raw shape before any pixel is allocated, and that size against the job's own; a window's
sample count and codec before its samples are read), and the only exception a reader sees
is ``WireError``, whatever the entry holds.
"""

from __future__ import annotations

import math

import numpy as np

from emostream.broker.broker_config import AudioCodec, BrokerConfig, Codec
from emostream.broker.codecs import (
    Fields,
    WireError,
    decode_frame,
    decode_window,
    edge,
    encode_frame,
    encode_window,
    field_int,
    field_known,
    field_num,
    field_text,
    jpeg_size,
    to_mono,
    to_wall,
)
from emostream.modalities import ModalitySpec, registered, spec
from emostream.pipeline.jobs import DropReason, Job
from emostream.pipeline.outcomes import Dropped, Failed, Outcome, Scored

__all__ = [
    "Fields",
    "WireError",
    "decode_frame",
    "decode_outcome",
    "decode_payload",
    "decode_window",
    "encode_frame",
    "encode_job",
    "encode_outcome",
    "encode_window",
    "job_header",
    "jpeg_size",
]

WIRE_VERSION = b"2"  # 2: typed frame fields instead of a JSON ``meta`` (voice: same, added)
MAX_SEQ = 2**63 - 1
MAX_CLASSES = 256

_ENVELOPE = {b"v", b"session", b"modality", b"seq", b"created", b"pts"}
_JOB = {b"deadline", b"enqueued", b"reply_to", b"codec", b"data", b"shape"}
_OUTCOME = {b"token", b"kind", b"model", b"boxes", b"scores", b"classes", b"reason", b"error"}


def _info_fields() -> set[bytes]:
    return {f for s in registered() for f in s.info_fields}


def decode_payload(fields: Fields, job: Job) -> np.ndarray:
    """The payload of a job entry whose header ``job`` was read: a frame or a window."""
    return spec(job.modality).decode_payload(fields, job)


def _header_fields(job: Job) -> Fields:
    fields: Fields = {
        b"v": WIRE_VERSION,
        b"session": job.session.encode(),
        b"modality": job.modality.encode(),
        b"seq": str(job.seq).encode(),
        b"created": repr(to_wall(job.created)).encode(),
    }
    fields.update(spec(job.modality).encode_info(job.info))
    if job.pts is not None:
        fields[b"pts"] = repr(job.pts).encode()
    return fields


def encode_job(
    job: Job, codec: Codec = "jpeg", quality: int = 90, audio: AudioCodec = "f32"
) -> Fields:
    """A job entry: a face job's frame as ``codec``, a voice job's window as ``audio``."""
    fields = _header_fields(job)
    fields[b"deadline"] = repr(to_wall(job.deadline)).encode()
    fields[b"enqueued"] = repr(to_wall(job.enqueued)).encode()
    fields[b"reply_to"] = job.reply_to.encode()
    # per job on the ingest's hot path: the values are already the settings' (no validation)
    config = BrokerConfig.model_construct(codec=codec, jpeg_quality=quality, audio_codec=audio)
    fields.update(spec(job.modality).encode_payload(job, config))
    return fields


def _modality(fields: Fields) -> ModalitySpec:
    name = field_text(fields, b"modality")
    for s in registered():
        if s.name == name:
            return s
    raise WireError(f"unknown modality {name!r}")


def _header(fields: Fields, token: str, allowed: set[bytes]) -> Job:
    if fields.get(b"v") != WIRE_VERSION:
        raise WireError(f"wire version {fields.get(b'v')!r:.20}, this one reads {WIRE_VERSION!r}")
    field_known(fields, allowed | _info_fields())
    modality = _modality(fields)
    for other in registered():
        theirs = sorted(other.info_fields - modality.info_fields)
        stray = [k.decode() for k in theirs if k in fields]
        if stray:
            raise WireError(f"a {modality.name} job with {other.name} field(s) {stray}")
    return Job(
        session=field_text(fields, b"session"),
        seq=field_int(fields, b"seq", 0, MAX_SEQ),
        pts=field_num(fields, b"pts") if b"pts" in fields else None,
        payload=np.empty((0,), np.uint8),
        info=modality.decode_info(fields),
        created=to_mono(field_num(fields, b"created")),
        deadline=to_mono(field_num(fields, b"deadline", infinite=True))
        if b"deadline" in fields
        else math.inf,
        enqueued=to_mono(field_num(fields, b"enqueued")) if b"enqueued" in fields else 0.0,
        reply_to=field_text(fields, b"reply_to", ""),
        token=token,
    )


@edge
def job_header(fields: Fields, token: str) -> Job:
    """The routing part of a job entry (session, seq, reply_to, times), without the frame.

    Enough to send a drop or error outcome back even when the payload cannot be read.
    Every field is checked (version, known names, modality, ranges, finite numbers);
    anything else is a ``WireError``.
    """
    return _header(fields, token, _ENVELOPE | _JOB)


def encode_outcome(outcome: Outcome) -> Fields:
    """An outcome for its ingest node: the job's identity plus what became of it."""
    fields = _header_fields(outcome.job)
    fields[b"token"] = outcome.job.token.encode()
    if isinstance(outcome, Scored):
        result = outcome.result
        fields[b"kind"] = b"scored"
        fields[b"model"] = outcome.model.encode()
        fields.update(spec(outcome.job.modality).encode_scores(result))
        fields[b"classes"] = ",".join(result.classes).encode()
    elif isinstance(outcome, Dropped):
        fields[b"kind"] = b"dropped"
        fields[b"reason"] = outcome.reason.value.encode()
    else:
        fields[b"kind"] = b"failed"
        fields[b"error"] = outcome.error.encode()
    return fields


@edge
def decode_outcome(fields: Fields) -> Outcome:
    """An outcome entry of a results stream; anything unreadable is a ``WireError``."""
    job = _header(fields, field_text(fields, b"token", ""), _ENVELOPE | _OUTCOME)
    kind = fields.get(b"kind")
    if kind == b"dropped":
        try:
            return Dropped(job, DropReason(field_text(fields, b"reason")))
        except ValueError:
            raise WireError(f"unknown drop reason {fields.get(b'reason')!r:.40}") from None
    if kind == b"failed":
        return Failed(job, fields.get(b"error", b"")[:2000].decode(errors="replace"))
    if kind != b"scored":
        raise WireError(f"unknown outcome kind {kind!r:.40}")
    classes = tuple(c for c in field_text(fields, b"classes").split(",") if c)
    if not 0 < len(classes) <= MAX_CLASSES:
        raise WireError(f"field 'classes' names {len(classes)} classes")
    scores = spec(job.modality).decode_scores(fields, classes)
    return Scored(job, field_text(fields, b"model", ""), scores)
