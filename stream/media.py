"""Decode images and videos into BGR frames, refusing bad input with a precise reason.

Images go through Pillow so that the pixel count is checked from the header before any
pixel is decoded (a small file can claim a huge canvas), and truncated files fail instead
of decoding half a picture. A JPEG or PNG whose byte count is below what any real file of
its claimed canvas needs is refused before decoding too (``plausible``): libjpeg would
otherwise fill the missing part in silently, at the full canvas's cost in memory and time.
Video files go through OpenCV's bundled FFmpeg; a video in memory (an upload) through
PyAV (``container_frames``), which reads from bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.container import InputContainer
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".y4m"}
DEFAULT_MAX_PIXELS = 40_000_000

# We enforce our own, configurable pixel limit from the header (below), so Pillow's fixed
# bomb limit (about 89 M pixels) must not pre-empt it with a misleading error.
Image.MAX_IMAGE_PIXELS = None

DEFLATE_MAX_RATIO = 1032  # deflate (PNG) never expands more than this
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by IHDR colour type


class MediaError(ValueError):
    """Input that cannot be used; ``code`` is stable for clients, ``status`` the HTTP one."""

    def __init__(self, code: str, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


def min_file_bytes(img: Image.Image, data: bytes) -> int:
    """A lower bound on the size of a real file of ``img``'s format and canvas (0: none).

    Each is half of what the format cannot go below, so only files that cannot be whole
    fail. JPEG (Huffman): every 8x8 block of the luma channel costs at least one bit (its
    DC code), so w*h/512 bytes; a blank grey 6000x6000 JPEG is 141 kB against a bound of
    35 kB, and the photos in the test media are 0.11-0.66 bytes per pixel against 0.001.
    PNG: the raw rows (a filter byte plus the samples, from IHDR) over deflate's largest
    expansion; a blank 1-bit 6000x6000 PNG is 4.4 kB against 2.2 kB.
    """
    w, h = img.size
    if img.format == "JPEG":
        return w * h // 1024
    if img.format == "PNG" and len(data) >= 26:
        depth, colour = data[24], data[25]
        row = 1 + (w * depth * PNG_CHANNELS.get(colour, 1) + 7) // 8
        return h * row // DEFLATE_MAX_RATIO // 2
    return 0


#: The most bytes ``decode_image`` holds at once per pixel of the canvas (40 MP, RSS sampled
#: with psutil: WebP lossless and lossy, RGB PNG and JPEG 6.0, 1-bit PNG 3.0): the RGB
#: bytes and the BGR array overlap. What a request reserves of the decode budget, from
#: the header, before a pixel is decoded (``stream/decode_budget.py``).
DECODE_BYTES_PER_PIXEL = 6


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image's header, read and checked (size, plausibility) without decoding a pixel,
    so that a request can reserve its decoding cost before paying it."""
    if not data:
        raise MediaError("empty_body", "the body is empty; send an image file", 400)
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise MediaError(
            "not_an_image",
            "the body is not an image format we can read (JPEG, PNG, WebP, BMP, GIF, TIFF)",
            415,
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("corrupt_image", f"the image could not be read: {exc}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise MediaError(
            "too_many_pixels", f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}", 413
        )
    need = min_file_bytes(img, data)
    if len(data) < need:
        raise MediaError(
            "corrupt_image",
            f"the file is {len(data)} bytes, fewer than any whole {img.format} of "
            f"{w}x{h} needs (at least {need}): it is truncated or its header lies",
        )
    return img


def decode_bytes(img: Image.Image) -> int:
    """What decoding ``img`` costs in memory at its peak (``DECODE_BYTES_PER_PIXEL``)."""
    w, h = img.size
    return w * h * DECODE_BYTES_PER_PIXEL


def decode_opened(img: Image.Image, data: bytes) -> np.ndarray:
    """An image from ``open_image`` (of ``data``) to a BGR uint8 array, with the peak under
    ``DECODE_BYTES_PER_PIXEL``: WebP through OpenCV, which decodes straight into BGR
    (Pillow holds its decoder's RGBA, its own copy and ours: 14 bytes a pixel); for the
    others Pillow's copy is freed before the BGR array is made, and 1-bit images go
    through grey, not RGB."""
    if img.format == "WEBP":
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (img.height, img.width):
            raise MediaError("corrupt_image", "the WebP image could not be decoded")
        return bgr
    try:
        img.load()
        if img.mode not in ("RGB", "L"):
            img = img.convert("L" if img.mode == "1" else "RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("corrupt_image", f"the image could not be decoded: {exc}") from None
    arr = np.asarray(img)
    img.close()  # Pillow's copy (4 bytes a pixel) goes before the BGR array is made
    code = cv2.COLOR_GRAY2BGR if arr.ndim == 2 else cv2.COLOR_RGB2BGR
    return cv2.cvtColor(arr, code)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of an image file to a BGR uint8 array."""
    return decode_opened(open_image(data, max_pixels), data)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return decode_image(path.read_bytes(), max_pixels)


@dataclass
class VideoFrame:
    index: int
    pts: float  # seconds
    image: np.ndarray


@dataclass
class VideoInfo:
    fps: float
    frames: int
    width: int
    height: int


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError("corrupt_video", f"{path}: not a video we can decode")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    info = VideoInfo(
        fps=fps if fps > 0 else 25.0,
        frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    return cap, info


class FpsFilter:
    """Which frames ``--fps N`` keeps: the frame whose time first reaches each 1/N s step
    (all of them without ``fps``), so the kept frames keep their real media times."""

    def __init__(self, fps: float | None) -> None:
        self.step = 1.0 / fps if fps else 0.0
        self.next_t = 0.0

    def keep(self, pts: float) -> bool:
        if not self.step:
            return True
        if pts + 1e-6 < self.next_t:
            return False
        self.next_t += self.step
        while self.next_t <= pts:
            self.next_t += self.step
        return True


def iter_video(path: Path, fps: float | None = None) -> Iterator[VideoFrame]:
    """Frames with their media time; with ``fps``, only frames at about that rate."""
    cap, info = open_video(path)
    try:
        keep = FpsFilter(fps)
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            pts = msec / 1000.0 if msec > 0 or index == 0 else index / info.fps
            if keep.keep(pts):
                yield VideoFrame(index, round(pts, 6), frame)
            index += 1
        if index == 0:
            raise MediaError("corrupt_video", f"{path}: no decodable frames")
    finally:
        cap.release()


def container_frames(
    container: InputContainer,
    fps: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str = "the video",
) -> Iterator[VideoFrame]:
    """The first video stream of an open FFmpeg container (a file in memory: the
    ``/v1/analyze`` body) as BGR frames with their media time, from 0 at its first frame;
    with ``fps``, only frames at about that rate. The frame size is checked against
    ``max_pixels`` from the stream's header, before a frame is decoded."""
    stream = container.streams.video[0]
    w, h = stream.codec_context.width, stream.codec_context.height
    if w * h > max_pixels:
        raise MediaError(
            "too_many_pixels", f"{source}: frames are {w}x{h}; the limit is {max_pixels}", 413
        )
    keep = FpsFilter(fps)
    rate = float(stream.average_rate or 25)
    first: float | None = None
    index = -1
    try:
        for index, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else index / rate
            first = t if first is None else first
            if frame.width * frame.height > max_pixels:
                raise MediaError(
                    "too_many_pixels",
                    f"{source}: a frame is {frame.width}x{frame.height}; the limit is {max_pixels}",
                    413,
                )
            if keep.keep(t - first):
                yield VideoFrame(index, round(t - first, 6), frame.to_ndarray(format="bgr24"))
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise MediaError("corrupt_video", f"{source}: cannot decode its video ({exc})") from None
    if index < 0:
        raise MediaError("corrupt_video", f"{source}: no decodable frames")


def kind_of(path: Path) -> str:
    """'image', 'video' or 'audio' by suffix (the decoders still verify the content). A
    video container holding audio only (a browser's MediaRecorder .webm with Opus, an .mp4
    with AAC) is 'audio': OpenCV would call it a corrupt video. A file with another suffix
    is probed: audio streams and no video stream make it 'audio' (not more: FFmpeg reads
    almost anything as some video, a text file as ANSI art)."""
    from emostream.stream.audio import AUDIO_SUFFIXES, media_streams  # it imports this module

    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        audio_only = path.is_file() and media_streams(path) == {"audio"}
        return "audio" if audio_only else "video"
    if suffix in AUDIO_SUFFIXES or (path.is_file() and media_streams(path) == {"audio"}):
        return "audio"
    raise MediaError("unsupported_file", f"{path}: unknown file type {suffix or '(none)'!r}", 415)
