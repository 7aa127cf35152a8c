"""Hypothesis strategies for fuzzing the API: SDP mutations of a real offer, image files,
JSON, multipart bodies, header and parameter values.

Shared by ``tests/test_fuzz_offline.py`` (``check_offer`` in process) and
``tests/webrtc/test_fuzz.py`` (a real server in the private namespace). Mutations are small
dataclasses, so a failing example prints as a readable recipe (``Drop(line=3)``) that
applies to any aiortc offer: the ids and ports of a fresh offer differ, its lines do not.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from PIL import Image

# -- SDP ----------------------------------------------------------------------------------

#: Characters that have broken parsers: NUL, controls, line breaks inside a line, non-ASCII,
#: a byte-order mark, a lone surrogate (invalid UTF-8 once encoded with surrogatepass).
NASTY = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\t", "\r", "\n", "é", "\u2028", "\ufeff"]
NASTY += ["\U0001f600", "\udcff", " ", ":", "/", ";", "="]

#: Malformed or surprising lines, several of them reproductions from issue 12.
ODD_LINES = [
    "a=rtpmap:97 VP8",
    "a=rtpmap:97",
    "a=rtpmap:",
    "a=rtpmap:abc VP8/90000",
    "a=rtpmap:97 VP8/abc",
    "a=rtpmap:96 opus/48000/abc",
    "a=rtpmap:96 opus",
    "a=rtpmap:300 VP8/90000",
    "a=rtpmap:-1 VP8/90000",
    "a=fmtp:55 x=1",
    "a=fmtp:97",
    "a=fmtp:98 apt=abc",
    "a=fmtp:98 apt=55",
    "a=fmtp:96 minptime=abc",
    "a=rtcp-fb:97",
    "a=rtcp-fb:",
    "a=rtcp-fb:55 nack",
    "a=mid:",
    "a=mid:\x00",
    "a=ssrc:abc",
    "a=ssrc:1",
    "a=ssrc:99999999999 cname:x",
    "a=ssrc-group:FID",
    "a=ssrc-group:FID abc",
    "a=extmap:x",
    "a=extmap:1",
    "a=extmap:99999 urn:x",
    "a=sctp-port:abc",
    "a=sctp-port:",
    "a=sctp-port:99999999",
    "a=max-message-size:-1",
    "a=max-message-size:abc",
    "a=group:BUNDLE 9",
    "a=group:",
    "c=IN IP4",
    "c=IN IP4 garbage",
    "c=IN IP6 ::1",
    "a=candidate:",
    "a=candidate:1 1 udp x 10.213.0.1 9 typ host",
    "a=candidate:1 1 udp 1 999.1.1.1 9 typ host",
    "a=candidate:1 1 udp 1 10.213.0.1 99999 typ host",
    "a=candidate:1 1 tcp 1 10.213.0.1 9 typ host tcptype passive",
    "a=candidate:1 1 udp 1 10.213.0.1 9 typ relay",
    "a=fingerprint:sha-256",
    "a=fingerprint:md5 00",
    "a=fingerprint:sha-256 ZZ",
    "a=fingerprint:",
    "a=setup:",
    "a=setup:nonsense",
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=rtcp:abc",
    "a=rtcp:9 IN IP4",
    "a=msid:",
    "a=simulcast:send 1;2",
    "a=rid:1 send",
    "a=ice-options:trickle",
    "a=rtcp-mux-only",
    "a=sendrecv",
    "a=inactive",
    "a=recvonly",
    "a=end-of-candidates",
    "b=AS:abc",
    "m=video 9 UDP/TLS/RTP/SAVPF",
    "m=video abc UDP/TLS/RTP/SAVPF 97",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 97",
    "m=audio 9 RTP/AVP 0",
    "m=application 9 UDP/DTLS/SCTP",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=",
    "v=1",
    "x=garbage",
    "=",
    "",
]

#: Prefixes whose lines a mutation removes all at once (fingerprint, ICE, setup, ...).
REMOVABLE = [
    "a=fingerprint",
    "a=ice-ufrag",
    "a=ice-pwd",
    "a=setup",
    "a=candidate",
    "a=mid",
    "a=rtpmap",
    "a=fmtp",
    "a=rtcp-fb",
    "a=ssrc",
    "a=msid",
    "a=extmap",
    "a=group",
    "a=sctp-port",
    "a=max-message-size",
    "c=",
    "m=",
    "o=",
    "s=",
    "t=",
    "v=",
]

SETUP_VALUES = ["actpass", "active", "passive", "holdconn", "nonsense", "", "ACTIVE", "actpass x"]


def _at(lines: list[str], index: int) -> int:
    return index % len(lines)


@dataclass(frozen=True)
class Drop:
    line: int

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        i = _at(lines, self.line)
        return lines[:i] + lines[i + 1 :]


@dataclass(frozen=True)
class Duplicate:
    line: int
    times: int

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        i = _at(lines, self.line)
        return lines[: i + 1] + [lines[i]] * self.times + lines[i + 1 :]


@dataclass(frozen=True)
class Swap:
    a: int
    b: int

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        out = list(lines)
        i, j = _at(lines, self.a), _at(lines, self.b)
        out[i], out[j] = out[j], out[i]
        return out


@dataclass(frozen=True)
class Shuffle:
    seed: int

    def __call__(self, lines: list[str]) -> list[str]:
        order = np.random.default_rng(self.seed).permutation(len(lines))
        return [lines[k] for k in order]


@dataclass(frozen=True)
class Cut:
    """Keep only the first ``keep`` characters of a line's value (after ``:`` or ``=``)."""

    line: int
    keep: int

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        i = _at(lines, self.line)
        ln = lines[i]
        head, sep, value = ln.partition(":") if ln.startswith("a=") else ln.partition("=")
        out = list(lines)
        out[i] = head + sep + value[: self.keep]
        return out


@dataclass(frozen=True)
class Inject:
    line: int
    at: int
    text: str

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return [self.text]
        i = _at(lines, self.line)
        ln = lines[i]
        pos = self.at % (len(ln) + 1)
        out = list(lines)
        out[i] = ln[:pos] + self.text + ln[pos:]
        return out


@dataclass(frozen=True)
class Renumber:
    """Replace the ``which``-th number of a line (a payload type, port, ssrc...) by ``value``."""

    line: int
    which: int
    value: str

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        i = _at(lines, self.line)
        spans = [m.span() for m in re.finditer(r"\d+", lines[i])]
        if not spans:
            return lines
        a, b = spans[self.which % len(spans)]
        out = list(lines)
        out[i] = lines[i][:a] + self.value + lines[i][b:]
        return out


@dataclass(frozen=True)
class Setup:
    value: str

    def __call__(self, lines: list[str]) -> list[str]:
        return [f"a=setup:{self.value}" if ln.startswith("a=setup:") else ln for ln in lines]


@dataclass(frozen=True)
class RemoveAll:
    prefix: str

    def __call__(self, lines: list[str]) -> list[str]:
        return [ln for ln in lines if not ln.startswith(self.prefix)]


@dataclass(frozen=True)
class Insert:
    line: int
    text: str

    def __call__(self, lines: list[str]) -> list[str]:
        i = self.line % (len(lines) + 1)
        return [*lines[:i], self.text, *lines[i:]]


@dataclass(frozen=True)
class Huge:
    """A very long line: over the SDP size limit (64 KiB by default) or just under it."""

    line: int
    size: int

    def __call__(self, lines: list[str]) -> list[str]:
        return Insert(self.line, "a=x-huge:" + "x" * self.size)(lines)


@dataclass(frozen=True)
class Upper:
    line: int

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        i = _at(lines, self.line)
        return [*lines[:i], lines[i].upper(), *lines[i + 1 :]]


Mutation = Callable[[list[str]], list[str]]

_index = st.integers(min_value=0, max_value=500)
_numbers = st.one_of(
    st.integers(min_value=-5, max_value=300).map(str),
    st.sampled_from(["0", "127", "128", "255", "65536", "2147483648", "9" * 30, "", "x", "1.5"]),
)

MUTATIONS: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(Drop, _index),
    st.builds(Duplicate, _index, st.integers(1, 3)),
    st.builds(Swap, _index, _index),
    st.builds(Shuffle, st.integers(0, 2**32 - 1)),
    st.builds(Cut, _index, st.integers(0, 12)),
    st.builds(Inject, _index, _index, st.one_of(st.sampled_from(NASTY), st.text(max_size=4))),
    st.builds(Renumber, _index, st.integers(0, 8), _numbers),
    st.builds(Setup, st.sampled_from(SETUP_VALUES)),
    st.builds(RemoveAll, st.sampled_from(REMOVABLE)),
    st.builds(Insert, _index, st.one_of(st.sampled_from(ODD_LINES), st.text(max_size=40))),
    st.builds(Huge, _index, st.sampled_from([2_000, 30_000, 70_000])),
    st.builds(Upper, _index),
)


def sdp_lines(sdp: str) -> list[str]:
    """The non-empty lines, split as aiortc splits them (``str.splitlines``: CR, LF, CRLF,
    and the other Unicode line breaks)."""
    return [ln for ln in sdp.splitlines() if ln]


@st.composite
def mutated_sdp(draw: st.DrawFn, base: str) -> str:
    """``base`` with one to five mutations, joined by some line ending, maybe truncated."""
    lines = sdp_lines(base)
    for mutate in draw(st.lists(MUTATIONS, min_size=1, max_size=5)):
        lines = mutate(lines)
    eol = draw(st.sampled_from(["\r\n", "\n", "\r", "\n\r"]))
    text = eol.join(lines) + eol
    # a fraction, not an offset: the draws stay the same for offers of other lengths (a
    # fresh offer's ports and ids differ), so a fixed seed tries the same mutations
    cut = draw(st.one_of(st.none(), st.integers(0, 999)))
    return text if cut is None else text[: len(text) * cut // 1000]


def sdp_bytes(sdp: str) -> bytes:
    """The SDP on the wire; lone surrogates become invalid UTF-8 (as a buggy client sends)."""
    return sdp.encode("utf-8", "surrogatepass")


def has_credentials(sdp: str) -> bool:
    """Whether an offer carries a DTLS fingerprint and ICE credentials (with values)."""
    lines = sdp_lines(sdp)
    return all(
        any(re.match(rf"^a={name}:\S", ln) for ln in lines)
        for name in ("fingerprint", "ice-ufrag", "ice-pwd")
    )


# -- images -------------------------------------------------------------------------------

_MODES = {
    "JPEG": ["RGB", "L", "CMYK"],
    "PNG": ["RGB", "L", "RGBA", "P", "1", "I;16"],
    "GIF": ["P", "L"],
    "BMP": ["RGB", "L", "1"],
    "TIFF": ["RGB", "L", "RGBA"],
    "WEBP": ["RGB", "RGBA"],
}


def _encode(fmt: str, mode: str, w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(rgb, "RGB").convert(mode)
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def _put(data: bytes, offset: int, value: bytes) -> bytes:
    if offset + len(value) > len(data):
        return data
    return data[:offset] + value + data[offset + len(value) :]


def claim_size(data: bytes, w: int, h: int) -> bytes:
    """Rewrite the canvas size a JPEG, PNG, GIF or BMP header claims (pixels stay)."""
    if data.startswith(b"\xff\xd8"):
        m = re.search(rb"\xff[\xc0-\xc3]", data)
        if m:
            return _put(
                data,
                m.start() + 5,
                (h & 0xFFFF).to_bytes(2, "big") + (w & 0xFFFF).to_bytes(2, "big"),
            )
    if data.startswith(b"\x89PNG"):
        return _put(
            data, 16, (w & 0xFFFFFFFF).to_bytes(4, "big") + (h & 0xFFFFFFFF).to_bytes(4, "big")
        )
    if data.startswith(b"GIF"):
        return _put(
            data, 6, (w & 0xFFFF).to_bytes(2, "little") + (h & 0xFFFF).to_bytes(2, "little")
        )
    if data.startswith(b"BM"):
        return _put(
            data, 18, w.to_bytes(4, "little", signed=True) + h.to_bytes(4, "little", signed=True)
        )
    return data


#: Claimed sides: tiny, zero, negative (BMP), and far over the pixel limit; never a big
#: canvas under the limit (a full decode of that is slow, not wrong: issue 12, item 11).
_SIDES = st.sampled_from([0, 1, 7, 30_000, 65_535, -1])


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(content type, bytes)``: a real small image, as it is or damaged."""
    fmt = draw(st.sampled_from(sorted(_MODES)))
    mode = draw(st.sampled_from(_MODES[fmt]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    data = _encode(fmt, mode, w, h, draw(st.integers(0, 2**32 - 1)))
    damage = draw(st.sampled_from(["none", "truncate", "flip", "claim", "prefix", "suffix"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    elif damage == "claim":
        data = claim_size(data, draw(_SIDES), draw(_SIDES))
    elif damage == "prefix":
        data = draw(st.binary(min_size=1, max_size=16)) + data
    elif damage == "suffix":
        data = data + draw(st.binary(min_size=1, max_size=256))
    return f"image/{fmt.lower()}", data


# -- JSON, multipart, header values -------------------------------------------------------

JSON_VALUES: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def deep_json(depth: int, kind: str) -> bytes:
    """JSON nested ``depth`` deep: lists, objects, or inside an otherwise valid offer."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "offer":
        return b'{"type": "offer", "sdp": "v=0", "x": ' + inner + b"}"
    return inner


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(content type, body)`` of a multipart/form-data body, well-formed or not."""
    boundary = draw(st.sampled_from(["b0undary", "x", "-" * 70, "a b", "é"]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["file", "image", "", "f\x00"]))
        filename = draw(st.sampled_from([None, "face.jpg", "", "../../etc/passwd", "é.png"]))
        if draw(st.booleans()):
            ctype, content = draw(image_files())
        else:
            ctype, content = "application/octet-stream", draw(st.binary(max_size=64))
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"Content-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n"
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + content + b"\r\n")
    end = draw(st.sampled_from([f"--{boundary}--\r\n", "", f"--{boundary}", "--other--\r\n"]))
    body = b"".join(parts) + end.encode()
    header = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "multipart/form-data; boundary=other",
            ]
        )
    )
    return header, body


CONTENT_TYPES = [
    "application/json",
    "application/sdp",
    "application/SDP; charset=utf-8",
    "image/jpeg",
    "image/png",
    "image/",
    "image/x-nonsense",
    "application/octet-stream",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=zz",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
    ";",
    "application/json; charset=latin-1",
    "*/*",
]

#: Header-legal text (visible ASCII, space, tab, and obs-text bytes as latin-1), as bytes.
HEADER_VALUES: st.SearchStrategy[bytes] = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.encode),
    st.binary(max_size=20).map(lambda b: bytes(c for c in b if c >= 0x80 or 0x20 <= c < 0x7F)),
    st.sampled_from(["é", "Bearer é", "\t", "😀"]).map(lambda s: s.encode("utf-8")),
)

#: Path-parameter text: any printable text (quoted for the URL) and known-tricky values.
PATH_VALUES: st.SearchStrategy[str] = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40),
    st.sampled_from(["0", "-1", "null", "%00", "\x00", "é", "a" * 2000, "%2F", "x;y", "a?b", "#"]),
)

QUERY_VALUES: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(["true", "false", "1", "0", "yes", "no", "", "maybe", "TRUE", "on", "é"]),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=30),
)


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def notable_bodies(offer: str) -> list[tuple[str | None, bytes | None]]:
    """``(content type, body)`` that every operation gets once: the real thing for each
    endpoint, and the known troublemakers (issue 12: JSON 1,000 deep, a lying image)."""
    jpeg = _encode("JPEG", "RGB", 32, 32, 0)
    return [
        (None, None),
        ("application/json", json_bytes({"sdp": offer, "type": "offer"})),
        ("application/json", b"{not json"),
        ("application/json", deep_json(1000, "list")),
        ("application/json", deep_json(1000, "object")),
        ("application/json", deep_json(1000, "offer")),
        ("application/sdp", sdp_bytes(offer)),
        ("image/jpeg", jpeg),
        ("image/jpeg", claim_size(jpeg, 6000, 6000)[:631]),
        ("image/png", claim_size(_encode("PNG", "RGB", 8, 8, 0), 30_000, 30_000)),
        (
            "multipart/form-data; boundary=b0",
            b'--b0\r\nContent-Disposition: form-data; name="file"; filename="f.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n--b0--\r\n",
        ),
    ]
