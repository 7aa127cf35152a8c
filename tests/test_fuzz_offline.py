"""Fuzz ``check_offer`` in process: whatever the text, it returns a summary or raises its
``SdpError`` with a 4xx status, a code and a reason; never anything else.

The base is a real aiortc offer (tests/fixtures/aiortc_offer.sdp, captured in the private
namespace), mutated by the same strategies as the server fuzz in tests/webrtc/test_fuzz.py.
Fixed seed and no example database, so every run tries the same inputs.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emostream.stream.sdp import SdpError, check_offer

from fuzz_inputs import mutated_sdp

OFFER = (Path(__file__).parent / "fixtures" / "aiortc_offer.sdp").read_text()
MAX_SDP_BYTES = 65536
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(sdp: str) -> None:
    try:
        check_offer(sdp, MAX_SDP_BYTES)
    except SdpError as exc:
        assert 400 <= exc.status < 500, exc.status
        assert exc.code and exc.detail
        assert isinstance(exc.code, str) and isinstance(exc.detail, str)


@FUZZ
@given(mutated_sdp(OFFER))
@example(OFFER)
@example(OFFER[: len(OFFER) // 2])
@example(OFFER.replace("a=setup:actpass", "a=setup:nonsense"))
@example(OFFER.replace("a=rtpmap:97 VP8/90000", "a=rtpmap:97 VP8"))
@example(OFFER.replace("a=mid:0", "a=mid:\x00"))
@example(OFFER.replace("a=mid:0", "a=mid:\udcff"))
def test_check_offer_raises_only_sdp_error_on_mutated_offers(sdp: str) -> None:
    _check(sdp)


@FUZZ
@given(st.text(max_size=400).map(lambda s: "v=0\r\n" + s))
def test_check_offer_raises_only_sdp_error_on_random_text(sdp: str) -> None:
    _check(sdp)
