"""Give an annotated video its source's sound back (``--annotate`` on a video).

OpenCV's ``VideoWriter`` writes pictures only, so an annotated mp4 was silent (issue 23).
``add_audio`` muxes the written video with the source's first audio stream: its packets are
copied when the codec fits the output container, else the audio is re-encoded to AAC.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
from av.audio.stream import AudioStream

#: Audio codecs an MP4 (or MOV, M4V) holds as they are; anything else is re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})


def fits(codec: str, suffix: str) -> bool:
    """The ``codec``'s packets can go into a ``suffix`` file unchanged."""
    if suffix.lower() in (".mp4", ".m4v", ".mov"):
        return codec in MP4_AUDIO
    return False


def add_audio(video: Path, source: Path) -> bool:
    """Rewrite ``video`` with ``source``'s first audio stream added; False (``video``
    untouched) when the source has no audio."""
    with av.open(str(source)) as src:
        if not src.streams.audio:
            return False
    tmp = video.with_name(f".{video.stem}.audio{video.suffix}")
    try:
        _mux(video, source, tmp)
        os.replace(tmp, video)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _mux(video: Path, source: Path, out_path: Path) -> None:
    with (
        av.open(str(video)) as pictures,
        av.open(str(source)) as src,
        av.open(str(out_path), "w") as out,
    ):
        vin = pictures.streams.video[0]
        vout = out.add_stream_from_template(vin)
        ain: AudioStream = src.streams.audio[0]
        copy = fits(ain.codec_context.name, out_path.suffix)
        aout = _audio_stream(out, ain, copy)
        for packet in pictures.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
        if copy:
            for sound in src.demux(ain):
                if sound.dts is None:
                    continue
                sound.stream = aout
                out.mux(sound)
        else:
            _encode(src, ain, aout, out)


def _audio_stream(out: av.container.OutputContainer, ain: AudioStream, copy: bool) -> AudioStream:
    if copy:
        return out.add_stream_from_template(ain)
    rate = ain.rate or 48000
    aac = out.add_stream("aac", rate=rate)
    aac.layout = "stereo" if (ain.channels or 1) > 1 else "mono"
    return aac


def _encode(
    src: av.container.InputContainer,
    ain: AudioStream,
    aout: AudioStream,
    out: av.container.OutputContainer,
) -> None:
    """Decode the source's audio and encode it as ``aout`` (AAC), resampled to fit."""
    resampler = av.AudioResampler(format="fltp", layout=aout.layout, rate=aout.rate)
    for frame in src.decode(ain):
        frame.pts = None
        for chunk in resampler.resample(frame):
            out.mux(aout.encode(chunk))
    for chunk in resampler.resample(None):
        out.mux(aout.encode(chunk))
    out.mux(aout.encode(None))
