"""Check an SDP offer before handing it to aiortc, so bad offers get a precise 4xx.

aiortc raises generic errors (or silently rejects m-lines) for offers it cannot use; here we
name the problem: not SDP, no media, or only codecs we cannot decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What aiortc can decode (video) and what we can take audio from.
VIDEO_CODECS = {"vp8", "h264"}
AUDIO_CODECS = {"opus", "pcmu", "pcma"}


class SdpError(ValueError):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


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
    if len(sdp.encode()) > max_bytes:
        raise SdpError(413, "sdp_too_large", f"SDP offer is over {max_bytes} bytes")
    lines = [ln.strip() for ln in sdp.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v=0") or not any(ln.startswith("m=") for ln in lines):
        raise SdpError(400, "bad_sdp", "not an SDP offer (needs 'v=0' and at least one m= line)")
    summary = OfferSummary()
    kind = ""
    for ln in lines:
        if ln.startswith("m="):
            kind = ln[2:].split(" ", 1)[0]
            if kind == "application":
                summary.has_data_channel = True
            summary.media.setdefault(kind, set())
        elif ln.startswith("a=rtpmap:") and kind:
            try:
                codec = ln.split(" ", 1)[1].split("/", 1)[0].lower()
            except IndexError:
                raise SdpError(400, "bad_sdp", f"malformed rtpmap line: {ln[:80]!r}") from None
            summary.media[kind].add(codec)
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
