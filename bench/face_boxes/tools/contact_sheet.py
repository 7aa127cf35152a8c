"""Render every image of the set with its boxes into docs/face-boxes.png."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench.boxset import SET_DIR, default_data_root, load_set

CELL = 136


def main() -> None:
    cells = []
    for li in load_set(default_data_root()):
        img = li.image()
        for (x, y, w, h), _ in li.faces:
            cv2.rectangle(img, (x, y), (x + w, y + h), (0, 255, 0), max(2, img.shape[1] // 300))
        for x, y, w, h in li.ignore:
            cv2.rectangle(img, (x, y), (x + w, y + h), (0, 0, 255), max(2, img.shape[1] // 300))
        k = CELL / max(img.shape[:2])
        img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        cell = np.zeros((CELL + 14, CELL, 3), np.uint8)
        cell[: img.shape[0], : img.shape[1]] = img
        label = f"{li.name} ({len(li.faces)})"
        cv2.putText(cell, label, (2, CELL + 11), 0, 0.31, (255, 255, 255), 1)
        cells.append(cell)
    while len(cells) % 6:
        cells.append(np.zeros_like(cells[0]))
    sheet = np.vstack([np.hstack(cells[i : i + 6]) for i in range(0, len(cells), 6)])
    out = SET_DIR.parents[1] / "docs" / "face-boxes.png"
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(out, Path(out).stat().st_size)


if __name__ == "__main__":
    main()
