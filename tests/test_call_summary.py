"""A call's summary, computed from the voice messages its session sent."""

from __future__ import annotations

from emostream.schema import VoiceMessage
from emostream.stream.call_summary import CallRecord
from emostream.stream.webhook import sign, verify

ANALYSED = frozenset({"customer", "unknown"})


def _speech(
    start: float,
    label: str,
    role: str = "customer",
    track: str = "in",
    unsure: bool | None = None,
) -> VoiceMessage:
    other = "neutral" if label != "neutral" else "angry"
    return VoiceMessage(
        track=track,
        role=role,
        start=start,
        end=start + 1.5,
        speech=True,
        scores={label: 0.75, other: 0.25},
        label=label,
        confidence=0.75,
        unsure=unsure,
        latency_ms=1.0,
        model="voice-emotion/1",
    )


def _silence(start: float, role: str = "customer", track: str = "in") -> VoiceMessage:
    return VoiceMessage(
        track=track, role=role, start=start, end=start + 1.5, speech=False, latency_ms=1.0
    )


def _record() -> CallRecord:
    call = CallRecord("s1", "local", ANALYSED)
    call.ids["callSid"] = "CA123"
    for t in (0.0, 0.5):
        call.add(_silence(t))
    # speech 1.0-4.5 s angry (windows every 0.5 s), then 5.0-7.0 neutral, then 8.0-9.5 angry
    for t in (1.0, 1.5, 2.0, 2.5, 3.0):
        call.add(_speech(t, "angry"))
    for t in (5.0, 5.5):
        call.add(_speech(t, "neutral"))
    call.add(_speech(8.0, "angry"))
    call.unanalysed_audio("agent", "out", 4.0)
    call.unanalysed_audio("agent", "out", 2.5)
    return call


def test_an_analysed_role_has_its_shares_means_timeline_and_longest_runs() -> None:
    summary = _record().summary()
    assert summary.type == "summary" and summary.session == "s1" and summary.transport == "local"
    assert summary.ids == {"callSid": "CA123"} and summary.models == ["voice-emotion/1"]
    customer = summary.roles["customer"]
    assert customer.analysed and customer.windows == 8
    assert customer.audio_s == 9.5  # the last window's end
    # the union of the speech windows: 1.0-4.5, 5.0-7.0, 8.0-9.5
    assert customer.speech_s == 3.5 + 2.0 + 1.5
    assert customer.classes == {"angry": 0.75, "neutral": 0.25}
    assert customer.dominant == "angry"
    assert customer.mean_scores == {"angry": round((6 * 0.75 + 2 * 0.25) / 8, 5), "neutral": 0.375}
    assert [b.start for b in customer.timeline or []] == [0.0, 5.0]
    assert (customer.timeline or [])[1].classes == {"angry": 0.3333, "neutral": 0.6667}
    longest = customer.longest or {}
    assert set(longest) == {"angry"}  # no run for neutral
    assert (longest["angry"].start, longest["angry"].end) == (1.0, 4.5)


def test_unsure_windows_are_counted_apart_and_in_no_class() -> None:
    """Unsure windows count in ``windows``, ``unsure`` and the mean scores, never as a
    class: not in the shares, the dominant class, the timeline's classes or a run."""
    call = CallRecord("s1", "local", ANALYSED)
    for t in (1.0, 1.5):
        call.add(_speech(t, "angry", unsure=False))
    for t in (2.0, 2.5, 3.0):  # unsure "sad": breaks the angry run, is no sad
        call.add(_speech(t, "sad", unsure=True))
    call.add(_speech(3.5, "angry", unsure=False))
    for t in (6.0, 6.5):  # a bin of unsure windows only
        call.add(_speech(t, "angry", unsure=True))
    customer = call.summary().roles["customer"]
    assert customer.windows == 8 and customer.unsure == 5
    assert customer.classes == {"angry": 0.375}  # 3 of 8 speech windows; no "sad"
    assert customer.dominant == "angry"
    assert customer.mean_scores == {"angry": 5 * 0.75 / 8, "neutral": 0.25, "sad": 3 * 0.75 / 8}
    first, second = customer.timeline or []
    assert (first.classes, first.unsure) == ({"angry": 0.5}, 0.5)
    assert (second.classes, second.unsure) == ({}, 1.0)
    longest = customer.longest or {}
    assert (longest["angry"].start, longest["angry"].end) == (1.0, 3.0)  # broken at 2.0
    only_unsure = CallRecord("s2", "local", ANALYSED)
    only_unsure.add(_speech(0.0, "happy", unsure=True))
    role = only_unsure.summary().roles["customer"]
    assert (role.windows, role.unsure, role.classes, role.dominant) == (1, 1, {}, None)
    assert role.longest == {}


def test_a_role_that_is_not_analysed_has_only_its_seconds() -> None:
    agent = _record().summary().roles["agent"]
    assert not agent.analysed and agent.audio_s == 6.5 and agent.windows is None
    dumped = agent.model_dump(exclude_none=True)
    assert set(dumped) == {"analysed", "audio_s", "tracks"}


def test_the_summary_json_has_the_contract_names() -> None:
    import json

    body = json.loads(_record().summary().to_json())
    assert body["schema"] == 1 and body["type"] == "summary" and "ended" not in body
    assert set(body["roles"]["customer"]) >= {
        "analysed",
        "audio_s",
        "speech_s",
        "windows",
        "unsure",
        "classes",
        "mean_scores",
        "dominant",
        "timeline",
        "longest",
    }
    assert body["roles"]["agent"] == {"analysed": False, "audio_s": 6.5, "tracks": ["out"]}


def test_a_webhook_signature_verifies_and_a_tampered_or_stale_one_does_not() -> None:
    body = b'{"type": "summary"}'
    header = sign(body, "s3cret", 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(body, header, "s3cret", now=1_700_000_010)
    assert not verify(body + b" ", header, "s3cret", now=1_700_000_010)
    assert not verify(body, header, "other", now=1_700_000_010)
    assert not verify(body, header, "s3cret", now=1_700_001_000)  # too old
    assert not verify(body, "garbage", "s3cret", now=1_700_000_010)
