"""Real SDP offers and the ways issue 12 broke them, for tests/test_sdp.py and tests/webrtc.

``fixtures/aiortc_offer.sdp`` is an offer aiortc made inside the test namespace: VP8/H.264
video, Opus/G.722/G.711 audio and the ``emotions`` data channel, one BUNDLE, all ICE
candidates. ``fixtures/chromium_offer.sdp`` is the one Chromium 156 sent to the demo page's
server in the browser test (tests/e2e), as aiortc logged it. Everything here is text;
nothing makes a peer connection.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

_FIXTURES = Path(__file__).parent / "fixtures"


def _offer(name: str) -> str:
    """CRLF whatever git did to the file's line ends."""
    return "\r\n".join((_FIXTURES / name).read_text().splitlines()) + "\r\n"


OFFER = _offer("aiortc_offer.sdp")
CHROMIUM_OFFER = _offer("chromium_offer.sdp")


def sub(pattern: str, repl: str, count: int = 0, sdp: str = OFFER) -> str:
    """``sdp`` with ``pattern`` replaced (``re.M``, lines ending in ``\\n``); CRLF again after.

    Fails if nothing matched, so a mutation can never silently be the real offer.
    """
    text = sdp.replace("\r\n", "\n")
    out = re.sub(pattern, repl, text, count=count, flags=re.M)
    assert out != text, pattern
    return out.replace("\n", "\r\n")


def _audio_only_isac() -> str:
    """Good video, and an audio m-section whose only codec aiortc does not have."""
    head, audio = OFFER.split("m=audio", 1)
    audio, data = audio.split("m=application", 1)
    audio = sub(r"^( \d+ \S+) .*$", r"\1 96", count=1, sdp=audio)
    audio = sub(r"^a=rtpmap:96 .*$", "a=rtpmap:96 ISAC/16000", sdp=audio)
    audio = sub(r"^a=rtpmap:[0-9] .*\n", "", sdp=audio)
    return f"{head}m=audio{audio}m=application{data}"


#: name -> (offer, words the 400's detail must contain): each malformed form of issue 12
#: defect 5, then two that only aiortc can judge (its verdict must be a 400 too).
BAD_OFFERS: dict[str, tuple[str, str]] = {
    "no setup": (sub(r"^a=setup:.*\n", ""), "no a=setup"),
    "cut in half": (OFFER[: len(OFFER) // 2], "is not 'c=IN IP4|IP6 <address>'"),
    "cut after half its lines": (
        "\r\n".join(OFFER.split("\r\n")[:40]) + "\r\n",
        "BUNDLE names mid '1', which no m-section has",
    ),
    "setup nonsense": (
        sub(r"^a=setup:actpass$", "a=setup:nonsense"),
        "a=setup must be one of actpass, active, passive",
    ),
    "rtcp-fb without value": (
        sub(r"^(m=video.*\n)", r"\1a=rtcp-fb:97\n"),
        "a=rtcp-fb needs '<payload type> <feedback type>'",
    ),
    "rtpmap without clock rate": (sub(r"^a=rtpmap:97 VP8/90000$", "a=rtpmap:97 VP8"), "clock rate"),
    "fmtp of unknown payload type": (
        sub(r"^(m=video.*\n)", r"\1a=fmtp:55 x=1\n"),
        "payload type '55' has no a=rtpmap",
    ),
    "mid with NUL": (sub(r"^a=mid:0$", "a=mid:0\x00x", count=1), "control character U+0000"),
    "no fingerprint": (sub(r"^a=fingerprint:.*\n", ""), "no a=fingerprint"),
    "no ICE credentials": (sub(r"^a=ice-(ufrag|pwd):.*\n", ""), "(ICE credentials)"),
    "BUNDLE of an unknown mid": (
        sub(r"^a=group:BUNDLE .*$", "a=group:BUNDLE 7 0 1 2"),
        "BUNDLE names mid '7'",
    ),
    "no rtcp-mux (aiortc)": (sub(r"^a=rtcp-mux\n", ""), "RTCP mux is not enabled"),
    "audio codec aiortc lacks (aiortc)": (_audio_only_isac(), "audio description"),
}


def mutate(rng: random.Random, lines: list[str]) -> list[str]:
    """One random edit of an offer's lines: a line dropped, doubled, cut, moved or altered."""
    out = list(lines)
    i = rng.randrange(len(out))
    how = rng.randrange(6)
    if how == 0:
        del out[i]
    elif how == 1:
        out.insert(rng.randrange(len(out)), out[i])
    elif how == 2:  # cut a line short
        out[i] = out[i][: rng.randrange(len(out[i]) + 1)]
    elif how == 3:  # drop one word
        words = out[i].split(" ")
        del words[rng.randrange(len(words))]
        out[i] = " ".join(words)
    elif how == 4:  # a character changed
        j = rng.randrange(len(out[i]) or 1)
        out[i] = out[i][:j] + rng.choice(" :/=x0-;*") + out[i][j + 1 :]
    else:  # a line from elsewhere in the offer
        out.insert(i, rng.choice(lines))
    return out


def mutated_offers(seed: int, n: int, max_edits: int = 3, base: str = OFFER) -> list[str]:
    """``n`` offers of 1 to ``max_edits`` edits of ``base`` each, the same for the same seed."""
    rng = random.Random(seed)
    lines = base.split("\r\n")[:-1]
    offers = []
    for _ in range(n):
        mutated = lines
        for _ in range(rng.randint(1, max_edits)):
            mutated = mutate(rng, mutated)
        offers.append("\r\n".join(mutated) + "\r\n")
    return offers
