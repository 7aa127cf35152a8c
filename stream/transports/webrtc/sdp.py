"""Check an SDP offer before handing it to aiortc, so bad offers get a precise 4xx.

aiortc's parser assumes a well-formed offer: a missing ``a=setup``, an ``a=rtpmap`` without
a clock rate or an ``a=fmtp`` for an undeclared payload type end in ``AttributeError``,
``IndexError`` or ``StopIteration`` deep inside it, and an offer without a DTLS fingerprint
is accepted and can never connect. Each check here names one such problem, with the line,
in the order a reader would fix them: the text, the layout, each line's grammar, the codecs,
then what the answer needs (mids and BUNDLE, DTLS, ICE). ``sessions.Session.answer`` still
turns aiortc's own parser errors into a 400 for whatever this does not foresee.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: What aiortc can decode (video) and what we can take audio from.
VIDEO_CODECS = {"vp8", "h264"}
AUDIO_CODECS = {"opus", "pcmu", "pcma"}
#: ``a=setup`` values of an offer (RFC 8842; aiortc also takes active/passive).
SETUP_VALUES = ("actpass", "active", "passive")
#: Fingerprint hashes aiortc can verify the peer's certificate with.
DTLS_HASHES = ("sha-256", "sha-384", "sha-512")
#: Attributes whose value aiortc reads: without one it fails on ``None``.
NEEDS_VALUE = {
    "candidate",
    "extmap",
    "fingerprint",
    "fmtp",
    "group",
    "ice-options",
    "ice-pwd",
    "ice-ufrag",
    "max-message-size",
    "mid",
    "msid",
    "msid-semantic",
    "rtcp",
    "rtcp-fb",
    "rtpmap",
    "sctp-port",
    "sctpmap",
    "setup",
    "ssrc",
    "ssrc-group",
}
#: The value grammar of the other attributes aiortc parses (it unpacks, ``int()``s and
#: asserts on them); ``[0-9]``, not ``\\d``: ``int()`` refuses most Unicode digits.
VALUE_GRAMMAR = {
    "candidate": re.compile(
        r"\S+ [0-9]+ \S+ [0-9]+ \S+ [0-9]+ typ \S+(?: (?:rport [0-9]+|(?!rport )\S+ \S+))*"
    ),
    "extmap": re.compile(r"[0-9]+(?:/[a-z]+)? \S+"),
    "max-message-size": re.compile(r"[0-9]+"),
    "rtcp": re.compile(r"[0-9]+(?: IN IP[46] \S+)?"),
    "sctp-port": re.compile(r"[0-9]+"),
    "sctpmap": re.compile(r"[0-9]+ .+"),
    "ssrc": re.compile(r"[0-9]+ [^ :]+:.*"),
    "ssrc-group": re.compile(r"\S+(?: [0-9]+)*"),
}
#: fmtp parameters aiortc reads as integers.
FMTP_INT_PARAMETERS = {
    "apt",
    "max-fr",
    "max-fs",
    "maxplaybackrate",
    "minptime",
    "stereo",
    "useinbandfec",
}
CONNECTION = re.compile(r"c=IN IP[46] [^ ]+")
LINE = re.compile(r"[a-z]=")
NUMBER = re.compile(r"[0-9]+")
#: Unicode control characters (Cc) but CR and LF, and the line/paragraph separators.
CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
M_LINE = re.compile(r"m=([^ ]+) ([0-9]+) ([A-Z/]+) (.+)")  # what aiortc's parser matches
RTP_KINDS = ("audio", "video")
FORBIDDEN_PAYLOAD_TYPES = range(72, 77)  # RTCP packet types (RFC 5761)
HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+")


class SdpError(ValueError):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def bad(detail: str) -> SdpError:
    return SdpError(400, "bad_sdp", detail)


@dataclass
class Attr:
    name: str
    value: str | None
    line: int  # 1-based, as a person counts

    def __str__(self) -> str:
        text = f"a={self.name}" + ("" if self.value is None else f":{self.value}")
        return f"line {self.line} ({text[:60]!r})"


@dataclass
class Section:
    """One m= section: its kind, formats (payload types) and attributes."""

    kind: str
    profile: str
    formats: list[str]
    line: int
    attrs: list[Attr] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [a.value for a in self.attrs if a.name == name and a.value is not None]

    def where(self) -> str:
        return f"the {self.kind} m-section at line {self.line}"


@dataclass
class OfferSummary:
    media: dict[str, set[str]] = field(default_factory=dict)  # kind -> codec names
    has_data_channel: bool = False

    @property
    def video(self) -> bool:
        return bool(self.media.get("video", set()) & VIDEO_CODECS)

    @property
    def audio(self) -> bool:
        return bool(self.media.get("audio", set()) & AUDIO_CODECS)


def check_offer(sdp: str, max_bytes: int) -> OfferSummary:
    """What the offer carries; raises :class:`SdpError` naming the first problem found."""
    if len(sdp.encode("utf-8", "surrogatepass")) > max_bytes:
        raise SdpError(413, "sdp_too_large", f"SDP offer is over {max_bytes} bytes")
    check_text(sdp)
    session, sections = parse(sdp)
    for s in sections:
        check_m_line(s)
        check_codec_lines(s)
    summary = summarize(sections)
    check_mids(session, sections)
    check_dtls(session, sections)
    check_ice(session, sections)
    return summary


def check_text(sdp: str) -> None:
    """No control characters but CR/LF: aiortc's ``splitlines`` would split on some."""
    found = CONTROL.search(sdp)
    if found is not None:
        line = len((sdp[: found.start()] + "x").splitlines())
        raise bad(f"line {line}: control character U+{ord(found[0]):04X} is not allowed in SDP")


def parse(sdp: str) -> tuple[list[Attr], list[Section]]:
    """Session attributes and m-sections, split into lines exactly as aiortc does."""
    lines = [(n, ln) for n, ln in enumerate(sdp.splitlines(), 1) if ln]
    if not lines or lines[0][1] != "v=0" or not any(ln.startswith("m=") for _, ln in lines):
        raise bad("not an SDP offer (needs 'v=0' and at least one m= line)")
    session: list[Attr] = []
    sections: list[Section] = []
    for n, ln in lines:
        if not LINE.match(ln):
            raise bad(f"line {n} ({ln[:60]!r}) is not of the form <letter>=<value>")
        if ln.startswith("v=") and n != lines[0][0]:
            raise bad(f"line {n}: only the first line may be v=")
        if ln.startswith("c=") and not CONNECTION.fullmatch(ln):
            raise bad(f"line {n} ({ln[:60]!r}) is not 'c=IN IP4|IP6 <address>'")
        if ln.startswith("m="):
            m = M_LINE.fullmatch(ln)
            if m is None:
                raise bad(f"line {n} ({ln[:60]!r}) is not 'm=<kind> <port> <proto> <formats>'")
            sections.append(Section(m[1], m[3], m[4].split(), n))
        elif ln.startswith("a="):
            name, sep, value = ln[2:].partition(":")
            attr = Attr(name, value if sep else None, n)
            if name in NEEDS_VALUE and not value:
                raise bad(f"{attr}: a={name} needs a value")
            grammar = VALUE_GRAMMAR.get(name) if sections else None
            if grammar is not None and not grammar.fullmatch(value):
                raise bad(f"{attr}: not a valid a={name} value")
            (sections[-1].attrs if sections else session).append(attr)
    return session, sections


def check_m_line(s: Section) -> None:
    """RTP formats are payload types; a legacy SCTP m-line's format is its port."""
    if s.kind == "application" and s.profile == "DTLS/SCTP" and not NUMBER.fullmatch(s.formats[0]):
        raise bad(f"{s.where()}: the SCTP port {s.formats[0][:10]!r} is not a number")
    if s.kind not in RTP_KINDS:
        return
    for fmt in s.formats:
        if not NUMBER.fullmatch(fmt) or int(fmt) > 127 or int(fmt) in FORBIDDEN_PAYLOAD_TYPES:
            raise bad(f"{s.where()}: payload type {fmt[:10]!r} is not 0-71 or 77-127")


def check_codec_lines(s: Section) -> None:
    """rtpmap has a clock rate; fmtp and rtcp-fb name payload types this section declares."""
    mapped: set[str] = set()
    for a in s.attrs:
        if a.name != "rtpmap" or a.value is None:
            continue
        pt, _, desc = a.value.partition(" ")
        bits = desc.split("/")
        codec, clock = bits[0], bits[1] if len(bits) > 1 else ""
        if not NUMBER.fullmatch(pt) or not codec or not NUMBER.fullmatch(clock):
            raise bad(f"{a}: a=rtpmap needs '<payload type> <codec>/<clock rate>'")
        if s.kind == "audio" and len(bits) > 2 and not NUMBER.fullmatch(bits[2]):
            raise bad(f"{a}: the channel count must be a number")
        mapped.add(pt)
    for a in s.attrs:
        if a.value is None:
            continue
        if a.name == "fmtp":
            pt, _, params = a.value.partition(" ")
            if pt not in mapped:
                raise bad(f"{a}: payload type {pt[:10]!r} has no a=rtpmap in {s.where()}")
            if not params:
                raise bad(f"{a}: a=fmtp needs '<payload type> <parameters>'")
            for key, sep, value in (p.partition("=") for p in params.split(";")):
                if sep and key in FMTP_INT_PARAMETERS and not NUMBER.fullmatch(value):
                    raise bad(f"{a}: fmtp parameter {key} must be a number")
        elif a.name == "rtcp-fb":
            bits = a.value.split(" ")
            if bits[0] != "*" and bits[0] not in s.formats:
                raise bad(f"{a}: payload type {bits[0][:10]!r} is not on the m= line")
            if len(bits) < 2 or not bits[1]:
                raise bad(f"{a}: a=rtcp-fb needs '<payload type> <feedback type>'")


def summarize(sections: list[Section]) -> OfferSummary:
    """Media kinds and codecs; refuses offers with nothing we can analyse."""
    summary = OfferSummary()
    for s in sections:
        if s.kind == "application":
            summary.has_data_channel = True
        codecs = summary.media.setdefault(s.kind, set())
        codecs.update(v.split(" ", 1)[1].split("/", 1)[0].lower() for v in s.values("rtpmap"))
    if not summary.video and not summary.audio:
        offered = {k: sorted(v) for k, v in summary.media.items() if k != "application"}
        if not offered:
            raise SdpError(400, "no_media", "the offer has no audio or video track to analyse")
        raise SdpError(
            415,
            "unsupported_codec",
            f"offered codecs {offered}; supported: video {sorted(VIDEO_CODECS)}, "
            f"audio {sorted(AUDIO_CODECS)}",
        )
    return summary


def check_mids(session: list[Attr], sections: list[Section]) -> None:
    """Every m-section has its own a=mid, and BUNDLE groups name only those."""
    mids: set[str] = set()
    for s in sections:
        (mid, *more) = s.values("mid") or [""]
        if not mid or more:
            raise bad(f"{s.where()} needs exactly one a=mid")
        if mid in mids:
            raise bad(f"{s.where()}: a=mid:{mid[:20]} is used by another m-section")
        mids.add(mid)
    for a in session:
        bits = (a.value or "").split() if a.name == "group" else []
        if bits[:1] == ["BUNDLE"]:
            unknown = [m for m in bits[1:] if m not in mids]
            if unknown:
                raise bad(f"{a}: BUNDLE names mid {unknown[0][:20]!r}, which no m-section has")


def check_dtls(session: list[Attr], sections: list[Section]) -> None:
    """Each m-section has a usable a=setup and a fingerprint (own or session-level)."""
    for a in [*session, *(a for s in sections for a in s.attrs)]:
        if a.name == "setup" and a.value not in SETUP_VALUES:
            raise bad(f"{a}: a=setup must be one of {', '.join(SETUP_VALUES)}")
        if a.name == "fingerprint":
            bits = (a.value or "").split()
            if len(bits) != 2 or not HEX_PAIRS.fullmatch(bits[1]):
                raise bad(f"{a}: a=fingerprint needs '<hash> <hex bytes joined by :>'")
    top = [a for a in session if a.name in ("setup", "fingerprint")]
    for s in sections:
        attrs = top + s.attrs
        if not any(a.name == "setup" for a in attrs):
            raise bad(f"{s.where()} has no a=setup (DTLS role), nor has the session")
        hashes = {a.value.split()[0].lower() for a in attrs if a.name == "fingerprint" and a.value}
        if not hashes:
            raise bad(f"{s.where()} has no a=fingerprint (DTLS certificate), nor has the session")
        if not hashes & set(DTLS_HASHES):
            raise bad(
                f"{s.where()}: fingerprint hash {sorted(hashes)} cannot be verified; "
                f"use one of {', '.join(DTLS_HASHES)}"
            )


def check_ice(session: list[Attr], sections: list[Section]) -> None:
    """Each m-section has ICE credentials (own or session-level)."""
    top = {a.name for a in session}
    for s in sections:
        names = top | {a.name for a in s.attrs}
        missing = [n for n in ("ice-ufrag", "ice-pwd") if n not in names]
        if missing:
            raise bad(f"{s.where()} has no a={' and no a='.join(missing)} (ICE credentials)")
