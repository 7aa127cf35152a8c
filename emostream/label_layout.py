"""Where ``--annotate`` puts each face's label: inside the image, over no other label.

In a crowd, labels drawn above every box fell on each other and off the image's edge
(issue 23). ``place_labels`` is pure geometry (no drawing), so it is tested on synthetic
crowds: greedy, each label in turn takes the first free spot of above its box, below it,
inside its top, then the nearest free spot around the box, and a whole-image scan last.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

#: ``(x, y, w, h)`` in pixels.
Rect = tuple[int, int, int, int]


def overlaps(a: Rect, b: Rect) -> bool:
    """The two rectangles share at least one pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(x: int, y: int, w: int, h: int, width: int, height: int) -> Rect:
    """The rectangle moved (not resized) into the image; top-left wins if it cannot fit."""
    return (max(0, min(x, width - w)), max(0, min(y, height - h)), w, h)


def _near(box: Rect, w: int, h: int, height: int) -> Iterator[tuple[int, int]]:
    """Spots around ``box``: above it, below it (each where it fits), inside its top, then
    the others nearest to "just above it" first."""
    x, y, _, bh = box
    if y - h >= 0:
        yield x, y - h  # above
    if y + bh + h <= height:
        yield x, y + bh  # below
    yield x, y  # inside, at the top
    dy, dx = max(1, h // 2), max(1, w // 4)
    spots = [
        (x + i * dx, y - h + j * dy) for j in range(-6, (bh + h) // dy + 7) for i in range(-6, 7)
    ]
    spots.sort(key=lambda p: (abs(p[0] - x) / w) ** 2 + (abs(p[1] - (y - h)) / h) ** 2)
    yield from spots


def _scan(w: int, h: int, width: int, height: int) -> Iterator[tuple[int, int]]:
    """Every spot of the image on a half-label grid: the last resort of a dense crowd."""
    for y in range(0, max(1, height - h + 1), max(1, h // 2)):
        for x in range(0, max(1, width - w + 1), max(1, w // 4)):
            yield x, y


def place_label(
    box: Rect,
    size: tuple[int, int],
    width: int,
    height: int,
    taken: Sequence[Rect],
    faces: Sequence[Rect] = (),
) -> Rect:
    """The label rectangle of ``size`` for ``box``: inside the image and clear of ``taken``
    when any such spot exists (near the box, off the other ``faces`` if it can be); else
    the least-overlapping one (the label still shows)."""
    w, h = size
    best: Rect | None = None
    best_hits = len(taken) + 1
    clear_of_labels: Rect | None = None
    for spots in (_near(box, w, h, height), _scan(w, h, width, height)):
        for x, y in spots:
            rect = _inside(x, y, w, h, width, height)
            hits = sum(overlaps(rect, t) for t in taken)
            if hits == 0:
                if not any(overlaps(rect, f) for f in faces):
                    return rect
                clear_of_labels = clear_of_labels or rect
            elif hits < best_hits:
                best, best_hits = rect, hits
        if clear_of_labels is not None:  # near the box beats clear of every face
            return clear_of_labels
    return best or _inside(box[0], box[1], w, h, width, height)


def place_labels(
    boxes: Sequence[Rect], sizes: Sequence[tuple[int, int]], width: int, height: int
) -> list[Rect]:
    """One label rectangle per box, in order, none over another where there is room, and
    over no other face where there is room near its own."""
    placed: list[Rect] = []
    for i, (box, size) in enumerate(zip(boxes, sizes, strict=True)):
        others = [b for j, b in enumerate(boxes) if j != i]
        placed.append(place_label(box, size, width, height, placed, others))
    return placed


def font_scale(width: int, height: int) -> float:
    """OpenCV's Hershey scale for an image: readable on a phone photo and a 4K frame alike,
    small enough that a crowd's labels find room."""
    return min(1.2, max(0.35, min(width, height) / 1100))
