"""The SDP offer validator (stream/transports/webrtc/sdp.py), on mutations of real offers.

The offers are real (``sdp_offers``): one aiortc made and one Chromium sent, both in the
test namespace. Each malformed form from issue 12 gets a 400 ``bad_sdp`` naming the
problem. No peer connection is made here: aiortc's SDP parser alone
(``aiortc.sdp.SessionDescription.parse``, pure text) checks that whatever the validator
lets through, aiortc can read.
"""

from __future__ import annotations

import re

import pytest
from aiortc.sdp import SessionDescription

from emostream.stream.transports.webrtc.sdp import SdpError, check_offer

from sdp_offers import BAD_OFFERS, CHROMIUM_OFFER, OFFER, mutated_offers, sub

LIMIT = 64 * 1024


def refused(sdp: str, status: int = 400, code: str = "bad_sdp") -> str:
    with pytest.raises(SdpError) as info:
        check_offer(sdp, LIMIT)
    assert (info.value.status, info.value.code) == (status, code), info.value.detail
    assert info.value.detail.strip()
    return info.value.detail


@pytest.mark.parametrize("offer", [OFFER, CHROMIUM_OFFER], ids=["aiortc", "chromium"])
def test_the_real_offers_pass(offer: str) -> None:
    summary = check_offer(offer, LIMIT)
    assert summary.video and summary.audio and summary.has_data_channel
    assert {"vp8", "h264"} <= summary.media["video"]


def test_chromium_offer_with_the_fingerprint_removed_is_refused() -> None:
    detail = refused(sub(r"^a=fingerprint:.*\n", "", sdp=CHROMIUM_OFFER))
    assert "the audio m-section at line 8 has no a=fingerprint" in detail


def test_transport_attributes_at_session_level_pass() -> None:
    """a=fingerprint, a=setup and ICE credentials may stand once, before the first m=."""
    shared = re.findall(r"^a=(?:fingerprint|setup|ice-ufrag|ice-pwd):.*\r\n", OFFER, re.M)
    top = "".join(dict.fromkeys(shared))
    body = sub(r"^a=(fingerprint|setup|ice-ufrag|ice-pwd):.*\n", "")
    moved = body.replace("t=0 0\r\n", "t=0 0\r\n" + top, 1)
    assert check_offer(moved, LIMIT).video
    SessionDescription.parse(moved)


# -- issue 12, defect 5: each reproduction ----------------------------------------------


@pytest.mark.parametrize("name", [n for n in BAD_OFFERS if "(aiortc)" not in n])
def test_each_reproduction_is_a_400_with_its_reason(name: str) -> None:
    sdp, words = BAD_OFFERS[name]
    assert words in refused(sdp)


@pytest.mark.parametrize("name", [n for n in BAD_OFFERS if "(aiortc)" in n])
def test_what_only_aiortc_can_judge_passes_here(name: str) -> None:
    """These reach aiortc, whose verdict the session turns into a 400 (tests/webrtc)."""
    check_offer(BAD_OFFERS[name][0], LIMIT)


def test_no_setup_line() -> None:
    assert "no a=setup" in refused(sub(r"^a=setup:.*\n", ""))


def test_offer_cut_in_half() -> None:
    refused(OFFER[: len(OFFER) // 2])


@pytest.mark.parametrize("value", ["nonsense", "holdconn", "actpass ", "ACTPASS"])
def test_setup_value_that_aiortc_has_no_role_for(value: str) -> None:
    assert "a=setup must be one of actpass, active, passive" in refused(
        sub(r"^a=setup:actpass$", f"a=setup:{value}", count=1)
    )


def test_rtcp_fb_with_no_value() -> None:
    detail = refused(sub(r"^(m=video.*\n)", r"\1a=rtcp-fb:97\n"))
    assert "a=rtcp-fb needs '<payload type> <feedback type>'" in detail


def test_rtpmap_with_no_clock_rate() -> None:
    detail = refused(sub(r"^a=rtpmap:97 VP8/90000$", "a=rtpmap:97 VP8"))
    assert "<codec>/<clock rate>" in detail and "line " in detail


def test_fmtp_for_an_unknown_payload_type() -> None:
    detail = refused(sub(r"^(m=video.*\n)", r"\1a=fmtp:55 x=1\n"))
    assert "payload type '55' has no a=rtpmap" in detail


def test_fmtp_in_the_data_channel_section() -> None:
    assert "has no a=rtpmap" in refused(sub(r"^(a=sctp-port:.*\n)", r"\1a=fmtp:0 x=1\n"))


def test_rtcp_fb_for_a_payload_type_not_on_the_m_line() -> None:
    assert "is not on the m= line" in refused(sub(r"^(m=video.*\n)", r"\1a=rtcp-fb:55 nack\n"))


def test_mid_with_a_nul() -> None:
    assert "control character U+0000" in refused(sub(r"^a=mid:0$", "a=mid:0\x00x", count=1))


@pytest.mark.parametrize("char", ["\x1c", "\x0b", "\x85", "\u2028", "\t", "\x7f"])
def test_control_characters_aiortc_would_split_or_keep(char: str) -> None:
    detail = refused(sub(r"^a=mid:1$", f"a=mid:1{char}2", count=1))
    assert f"U+{ord(char):04X}" in detail and detail.startswith("line ")


def test_no_fingerprint_is_refused() -> None:
    """Accepted before issue 12: DTLS could never have been verified."""
    detail = refused(sub(r"^a=fingerprint:.*\n", ""))
    assert "no a=fingerprint" in detail and "the video m-section" in detail


def test_fingerprint_missing_in_one_section_only() -> None:
    audio_onward = OFFER.index("m=audio")
    stripped = sub(r"^a=fingerprint:.*\n", "", sdp=OFFER[audio_onward:])
    assert "the audio m-section" in refused(OFFER[:audio_onward] + stripped)


@pytest.mark.parametrize(
    "value", ["sha-256", "sha-256 not-hex", "sha-256 AB:CD extra", "sha-256 ABCD"]
)
def test_malformed_fingerprint(value: str) -> None:
    assert "a=fingerprint needs" in refused(sub(r"^a=fingerprint:.*$", f"a=fingerprint:{value}"))


def test_fingerprint_only_with_hashes_aiortc_cannot_verify() -> None:
    detail = refused(sub(r"^a=fingerprint:sha-\d+ ", "a=fingerprint:md5 "))
    assert "cannot be verified" in detail and "sha-256" in detail


def test_no_ice_credentials_is_refused() -> None:
    detail = refused(sub(r"^a=ice-(ufrag|pwd):.*\n", ""))
    assert "no a=ice-ufrag and no a=ice-pwd" in detail


def test_no_ice_password_is_refused() -> None:
    assert "no a=ice-pwd (ICE credentials)" in refused(sub(r"^a=ice-pwd:.*\n", ""))


# -- the rest of what aiortc's parser assumes -----------------------------------------------


def test_every_m_section_needs_one_mid() -> None:
    assert "needs exactly one a=mid" in refused(sub(r"^a=mid:1\n", ""))
    assert "needs exactly one a=mid" in refused(sub(r"^(a=mid:1\n)", r"\1a=mid:9\n"))


def test_mids_are_unique() -> None:
    assert "is used by another m-section" in refused(sub(r"^a=mid:1$", "a=mid:0"))


def test_bundle_names_only_declared_mids() -> None:
    """aiortc bundles onto a transport that does not exist and fails in createAnswer."""
    detail = refused(sub(r"^a=group:BUNDLE .*$", "a=group:BUNDLE 7 0 1 2"))
    assert "BUNDLE names mid '7'" in detail


@pytest.mark.parametrize("name", ["setup", "fingerprint", "mid", "ice-ufrag", "rtpmap", "ssrc"])
def test_attributes_aiortc_reads_need_a_value(name: str) -> None:
    detail = refused(sub(r"^(m=video.*\n)", rf"\1a={name}\n"))
    assert f"a={name} needs a value" in detail
    detail = refused(sub(r"^(m=video.*\n)", rf"\1a={name}:\n"))
    assert f"a={name} needs a value" in detail


@pytest.mark.parametrize(
    "m_line",
    [
        "m=video 9 UDP/TLS/RTP/SAVPF",
        "m=video x UDP/TLS/RTP/SAVPF 97",
        "m=video  9 UDP/TLS/RTP/SAVPF 97",
        "m=video 9 udp/tls 97",
    ],
)
def test_malformed_m_line(m_line: str) -> None:
    assert "is not 'm=<kind> <port> <proto> <formats>'" in refused(sub(r"^m=video .*$", m_line))


@pytest.mark.parametrize("pt", ["x", "300", "128", "72", "-1"])
def test_payload_types_outside_rtp_range(pt: str) -> None:
    refused(sub(r"^(m=video \d+ \S+) 97", rf"\1 {pt}"))


def test_lines_must_be_letter_equals_value() -> None:
    assert "is not of the form <letter>=<value>" in refused(sub(r"^a=rtcp-mux$", " a=rtcp-mux"))
    assert "is not of the form" in refused(sub(r"^a=rtcp-mux$", "garbage", count=1))


@pytest.mark.parametrize("text", ["hello", "", "v=1\r\nm=video 9 RTP/AVP 97\r\n", "v=0\r\n"])
def test_not_an_offer(text: str) -> None:
    assert "not an SDP offer" in refused(text)


def test_codecs_we_cannot_decode_are_415() -> None:
    video_only = OFFER[: OFFER.index("m=audio")]
    vp9 = re.sub(r"(?m)^a=rtpmap:(\d+) (VP8|H264)/", r"a=rtpmap:\1 VP9/", video_only)
    assert "supported: video" in refused(vp9, 415, "unsupported_codec")


def test_over_the_size_limit_is_413() -> None:
    with pytest.raises(SdpError) as info:
        check_offer(OFFER, len(OFFER.encode()) - 1)
    assert (info.value.status, info.value.code) == (413, "sdp_too_large")


# -- what passes the validator, aiortc's parser reads ----------------------------------------


@pytest.mark.parametrize("base", [OFFER, CHROMIUM_OFFER], ids=["aiortc", "chromium"])
def test_what_the_validator_passes_aiortc_can_parse(base: str) -> None:
    """Bounded and seeded: 1,000 offers of 1-3 edits, each refused with a reason or parsed."""
    passed = 0
    for sdp in mutated_offers(seed=12, n=1000, base=base):
        try:
            check_offer(sdp, LIMIT)
        except SdpError as exc:
            assert exc.status in (400, 415) and exc.detail
            continue
        passed += 1
        try:
            SessionDescription.parse(sdp)
        except Exception as exc:  # the validator let through what aiortc cannot read
            pytest.fail(f"{type(exc).__name__}: {exc}\n{sdp}")
    assert passed > 0  # harmless edits (a dropped ssrc line, a doubled nack) pass
