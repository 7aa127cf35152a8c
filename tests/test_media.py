"""Decoding images and videos, and refusing bad input with a stable code and HTTP status."""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from emostream.stream.media import MediaError, decode_image, iter_video, kind_of


def _noisy_bgr(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """Random pixels: JPEG cannot compress them, so half the file is half the picture."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims a ``width`` x ``height`` gray canvas."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def _refused(data: bytes, max_pixels: int = 40_000_000) -> MediaError:
    with pytest.raises(MediaError) as info:
        decode_image(data, max_pixels)
    assert info.value.detail
    return info.value


# --- images: good input -----------------------------------------------------------------


def test_png_decodes_to_the_same_bgr_pixels() -> None:
    image = _noisy_bgr(37, 53)
    decoded = decode_image(_encode(image, ".png"))
    assert decoded.shape == (37, 53, 3)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)  # PNG is lossless: channel order kept


def test_jpeg_decodes_to_bgr_of_the_right_shape() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, :] = (255, 0, 0)  # pure blue in BGR
    decoded = decode_image(_encode(image, ".jpg"))
    assert decoded.shape == (120, 160, 3)
    assert decoded.dtype == np.uint8
    b, g, r = (float(decoded[..., c].mean()) for c in range(3))
    assert b > 200 and g < 40 and r < 40, (b, g, r)


def test_grayscale_png_decodes_to_three_channels() -> None:
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    decoded = decode_image(_encode(gray, ".png"))
    assert decoded.shape == (32, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(decoded[..., c], gray)


def test_rgba_png_decodes_to_three_channel_bgr() -> None:
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., 2] = 255  # red
    bgra[..., 3] = 255  # opaque
    decoded = decode_image(_encode(bgra, ".png"))
    assert decoded.shape == (20, 30, 3)
    np.testing.assert_array_equal(decoded[0, 0], [0, 0, 255])


def test_palette_and_sixteen_bit_png_decode_to_bgr_uint8() -> None:
    for img in (
        Image.new("P", (30, 20)),
        Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100),
    ):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        decoded = decode_image(buf.getvalue())
        assert decoded.shape == (20, 30, 3)
        assert decoded.dtype == np.uint8


def test_image_at_exactly_max_pixels_is_accepted() -> None:
    decoded = decode_image(_encode(np.zeros((10, 10, 3), np.uint8), ".png"), max_pixels=100)
    assert decoded.shape == (10, 10, 3)


# --- images: bad input ------------------------------------------------------------------


def test_empty_bytes_are_empty_body_400() -> None:
    err = _refused(b"")
    assert (err.code, err.status) == ("empty_body", 400)


def test_random_bytes_are_not_an_image_415() -> None:
    err = _refused(np.random.default_rng(1).bytes(4096))
    assert (err.code, err.status) == ("not_an_image", 415)


def test_text_is_not_an_image_415() -> None:
    err = _refused(b"hello, this is plainly text and not a picture\n" * 10)
    assert (err.code, err.status) == ("not_an_image", 415)


def test_truncated_jpeg_is_corrupt_image_422() -> None:
    jpeg = _encode(_noisy_bgr(), ".jpg")
    assert len(jpeg) > 100_000  # big enough that half of it is clearly half a picture
    err = _refused(jpeg[: len(jpeg) // 2])
    assert (err.code, err.status) == ("corrupt_image", 422)


def test_truncated_png_is_corrupt_image_422() -> None:
    png = _encode(_noisy_bgr(200, 200), ".png")
    err = _refused(png[: len(png) // 2])
    assert (err.code, err.status) == ("corrupt_image", 422)


def test_image_over_max_pixels_is_too_many_pixels_413() -> None:
    data = _encode(np.zeros((100, 101, 3), np.uint8), ".png")
    err = _refused(data, max_pixels=100 * 100)
    assert (err.code, err.status) == ("too_many_pixels", 413)
    assert "10100" in err.detail


def test_decompression_bomb_is_refused_from_the_header_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 5000x5000 all-zero PNG is a few KB on the wire and 75 MB decoded."""
    bomb = _encode(np.zeros((5000, 5000), np.uint8), ".png")
    assert len(bomb) < 100_000

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    err = _refused(bomb, max_pixels=1_000_000)
    assert (err.code, err.status) == ("too_many_pixels", 413)


def test_header_claiming_a_huge_canvas_is_too_many_pixels_413() -> None:
    """20000x20000 from a ~100 byte file: refused as too big, not as a corrupt file.

    Pillow's own bomb guard (MAX_IMAGE_PIXELS, ~89 M) fires inside ``Image.open`` for
    canvases past it; whichever guard trips, the client must get the size error.
    """
    for width, height in ((20_000, 20_000), (10_000, 10_000)):
        err = _refused(_png_claiming(width, height), max_pixels=40_000_000)
        assert (err.code, err.status) == ("too_many_pixels", 413), (width, height, err.detail)


def test_max_pixels_above_pillow_limit_is_honoured() -> None:
    """Settings may raise max_pixels past Pillow's default guard; the setting must win."""
    err = _refused(_png_claiming(10_000, 10_000), max_pixels=200_000_000)
    # The claimed canvas is allowed, but its pixel data is missing: a corrupt file.
    assert (err.code, err.status) == ("corrupt_image", 422)
    assert "decompression bomb" not in err.detail.lower(), err.detail


# --- kind_of ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.jpg", "b.JPEG", "c.png", "d.webp", "e.bmp", "f.tiff"])
def test_kind_of_images(name: str) -> None:
    assert kind_of(Path(name)) == "image"


@pytest.mark.parametrize("name", ["a.mp4", "b.MKV", "c.webm", "d.mov", "e.avi", "f.y4m"])
def test_kind_of_videos(name: str) -> None:
    assert kind_of(Path(name)) == "video"


@pytest.mark.parametrize("name", ["notes.txt", "archive.tar.gz", "README", "x.pdf"])
def test_kind_of_unknown_suffix_is_unsupported_file(name: str) -> None:
    with pytest.raises(MediaError) as info:
        kind_of(Path(name))
    assert info.value.code == "unsupported_file"
    assert info.value.status == 415
    assert info.value.detail


# --- videos -------------------------------------------------------------------------------


def _write_video(path: Path, frames: int, fps: float, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    try:
        for i in range(frames):
            writer.write(np.full((size[1], size[0], 3), (i * 7) % 256, np.uint8))
    finally:
        writer.release()
    return path


def test_text_file_named_mp4_is_corrupt_video(tmp_path: Path) -> None:
    path = tmp_path / "not-a-video.mp4"
    path.write_text("this is not a video\n" * 100)
    assert kind_of(path) == "video"
    with pytest.raises(MediaError) as info:
        list(iter_video(path))
    assert info.value.code == "corrupt_video"
    assert info.value.detail


def test_empty_file_named_mp4_is_corrupt_video(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaError) as info:
        list(iter_video(path))
    assert info.value.code == "corrupt_video"


def test_missing_video_is_corrupt_video(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as info:
        list(iter_video(tmp_path / "nope.mp4"))
    assert info.value.code == "corrupt_video"


def test_synthetic_video_all_frames_in_order(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "ten.mp4", frames=30, fps=10.0)
    frames = list(iter_video(path))
    assert [f.index for f in frames] == list(range(30))
    pts = [f.pts for f in frames]
    assert pts[0] == pytest.approx(0.0, abs=1e-3)
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    assert pts[-1] == pytest.approx(2.9, abs=0.05)
    assert frames[0].image.shape == (48, 64, 3)


def test_synthetic_video_sampled_at_fps(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "ten.mp4", frames=30, fps=10.0)  # 3 s of media
    frames = list(iter_video(path, fps=2))
    pts = [f.pts for f in frames]
    assert 5 <= len(frames) <= 7, pts
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    for a, b in itertools.pairwise(pts):
        assert b - a == pytest.approx(0.5, abs=0.11), pts


def test_real_video_sampled_at_two_fps(media: Path) -> None:
    path = media / "test.mp4"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    all_frames = list(iter_video(path))
    assert all_frames
    duration = all_frames[-1].pts + (all_frames[-1].pts / max(len(all_frames) - 1, 1))
    sampled = list(iter_video(path, fps=2))
    pts = [f.pts for f in sampled]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    for a, b in itertools.pairwise(pts):
        assert b - a == pytest.approx(0.5, abs=0.1), pts
    expected = 2 * duration
    assert abs(len(sampled) - expected) <= max(2.0, 0.1 * expected), (len(sampled), duration)
    assert sampled[0].image.ndim == 3 and sampled[0].image.shape[2] == 3
