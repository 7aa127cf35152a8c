"""The labelled face-box set (bench/face_boxes/boxes.json) is well formed."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from bench.boxset import BOXES_JSON, default_data_root, load_set

DOC = json.loads(BOXES_JSON.read_text())


def _iou(a: list[int], b: list[int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter)


def test_format() -> None:
    assert DOC["version"] == 1
    assert DOC["how"] and DOC["convention"]
    names = [e["name"] for e in DOC["images"]]
    assert len(names) == len(set(names))
    for e in DOC["images"]:
        assert e["source"].strip() and e["licence"].strip(), e["name"]
        assert ("file" in e) != ("data" in e), e["name"]
        assert "frame" not in e or "data" in e, e["name"]
        w, h = e["width"], e["height"]
        boxes = [f["box"] for f in e["faces"]] + e.get("ignore", [])
        for b in boxes:
            assert len(b) == 4 and all(isinstance(v, int) for v in b), (e["name"], b)
            x, y, bw, bh = b
            assert bw > 0 and bh > 0 and x >= 0 and y >= 0, (e["name"], b)
            assert x + bw <= w and y + bh <= h, (e["name"], b)
        for f in e["faces"]:
            assert set(f["tags"]) <= {"profile", "glasses", "occluded", "blurred"}, e["name"]
        faces = [f["box"] for f in e["faces"]]
        for i, a in enumerate(faces):
            for b in faces[i + 1 :]:
                assert _iou(a, b) <= 0.5, (e["name"], a, b)


def test_copied_images_match() -> None:
    for e in DOC["images"]:
        if "file" not in e:
            continue
        img = cv2.imread(str(BOXES_JSON.parent / e["file"]), cv2.IMREAD_COLOR)
        assert img is not None, e["file"]
        assert img.shape[:2] == (e["height"], e["width"]), e["name"]
    total = sum(p.stat().st_size for p in (BOXES_JSON.parent / "images").iterdir())
    assert total < 8_000_000


def test_counts_and_shared_images() -> None:
    root = default_data_root()
    if root is None:
        pytest.skip("shared data (EMOSTREAM_DATA or ../shared/data) absent")
    images = load_set(root)
    assert len(images) >= 20
    assert sum(1 for li in images if not li.faces) >= 4
    for li in images:
        if li.shared:
            assert li.image().shape[:2] == (li.height, li.width), li.name
    faces = sum(len(li.faces) for li in images)
    # The issue asks for at least 150 faces (the packaged images alone have 135).
    assert faces >= 150


def test_without_data_root() -> None:
    images = load_set(None)
    assert all(not li.shared for li in images)
    assert images and isinstance(images[0].path, Path)
    # Without the shared data the packaged images still carry most of the set.
    assert sum(len(li.faces) for li in images) >= 130
