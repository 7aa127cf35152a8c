"""Render an image with a coordinate grid (and the labelled boxes) for labelling by eye.

python bench/face_boxes/tools/render.py NAME [--crop x y w h] [--scale S] [--grid G] [--out PNG]
NAME is an entry of boxes.json, or a path to an image file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parents[1]


def load(name: str, data_root: Path) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The BGR image and its boxes.json entry (None for a bare file)."""
    if Path(name).is_file():
        img = cv2.imread(name, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read {name}")
        return img, None
    doc = json.loads((HERE / "boxes.json").read_text())
    entry = next(e for e in doc["images"] if e["name"] == name)
    from bench.boxset import load_set

    for li in load_set(data_root):
        if li.name == name:
            return li.image(), entry
    raise SystemExit(f"{name}: not loadable")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--crop", type=int, nargs=4)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--grid", type=int, default=50)
    ap.add_argument("--data", default="/work/shared/data")
    ap.add_argument("--extra", help="json list of [x,y,w,h] proposals drawn in blue")
    ap.add_argument("--out", default="/tmp/render.png")
    a = ap.parse_args()
    img, entry = load(a.name, Path(a.data))
    x0, y0 = 0, 0
    if a.crop:
        x0, y0, w, h = a.crop
        img = img[y0 : y0 + h, x0 : x0 + w]
    img = cv2.resize(img, None, fx=a.scale, fy=a.scale, interpolation=cv2.INTER_CUBIC)
    s = a.scale
    H, W = img.shape[:2]
    g = a.grid
    for gx in range((x0 // g) * g, x0 + int(W / s) + 1, g):
        px = int((gx - x0) * s)
        if 0 <= px < W:
            cv2.line(img, (px, 0), (px, H - 1), (0, 255, 255), 1)
            cv2.putText(img, str(gx), (px + 2, 12), 0, 0.4, (0, 255, 255), 1)
    for gy in range((y0 // g) * g, y0 + int(H / s) + 1, g):
        py = int((gy - y0) * s)
        if 0 <= py < H:
            cv2.line(img, (0, py), (W - 1, py), (0, 255, 255), 1)
            cv2.putText(img, str(gy), (2, py - 2), 0, 0.4, (0, 255, 255), 1)

    def rect(b: list[int], col: tuple[int, int, int], label: str) -> None:
        x, y, w, h = b
        p1 = (int((x - x0) * s), int((y - y0) * s))
        p2 = (int((x + w - x0) * s), int((y + h - y0) * s))
        cv2.rectangle(img, p1, p2, col, 1)
        cv2.putText(img, label, (p1[0], p2[1] + 12), 0, 0.4, col, 1)

    if entry is not None:
        for i, f in enumerate(entry["faces"]):
            rect(f["box"], (0, 255, 0), str(i))
        for b in entry.get("ignore", []):
            rect(b, (0, 0, 255), "ign")
    if a.extra:
        for b in json.loads(a.extra):
            rect([int(v) for v in b[:4]], (255, 0, 0), "p")
    cv2.imwrite(a.out, img)
    print(a.out, img.shape)


if __name__ == "__main__":
    main()
