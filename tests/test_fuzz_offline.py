"""Fuzz ``check_offer`` in process: whatever the text, it returns a summary or raises its
``SdpError`` with a 4xx status, a code and a reason; never anything else.

The bases are the real offers of tests/sdp_offers.py (aiortc's and Chromium's), mutated by
the strategies the server fuzz uses (tests/fuzz_inputs.py); issue 12's malformed offers
(``BAD_OFFERS``) are explicit examples. Fixed seed and no example database, so every run
tries the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emostream.stream.transports.webrtc.sdp import SdpError, check_offer

from fuzz_inputs import mutated_sdp
from sdp_offers import BAD_OFFERS, CHROMIUM_OFFER, OFFER

MAX_SDP_BYTES = 65536
FUZZ = settings(
    max_examples=250,
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
        assert isinstance(exc.code, str) and exc.code
        assert isinstance(exc.detail, str) and exc.detail


def _with_known(test: Callable[[str], None]) -> Callable[[str], None]:
    for bad, _ in BAD_OFFERS.values():
        test = example(bad)(test)
    return example(OFFER.replace("a=mid:0", "a=mid:\udcff"))(test)  # a lone surrogate


@pytest.mark.parametrize("base", [OFFER, CHROMIUM_OFFER], ids=["aiortc", "chromium"])
def test_check_offer_raises_only_sdp_error_on_mutated_offers(base: str) -> None:
    @FUZZ
    @given(mutated_sdp(base))
    @_with_known
    def one(sdp: str) -> None:
        _check(sdp)

    one()


@FUZZ
@given(st.text(max_size=400).map(lambda s: "v=0\r\n" + s))
def test_check_offer_raises_only_sdp_error_on_random_text(sdp: str) -> None:
    _check(sdp)
