"""Teachers for distillation: the mean served probabilities of repository versions.

A student learns from what an ensemble says of each training face (its soft targets: how
much a face looks like fear *and* surprise), not only from the one hard label. Teachers are
named like ``face-emotion/2``; each is run as serving runs it (its card's preprocessing,
ONNX Runtime, the mirror average inside its graph), once per training face before the
first epoch, so the student's cost per epoch does not grow with the ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emostream.models.card import ImageInput
from emostream.models.preprocess import prepare
from emostream.models.repository import ModelRepository
from emostream.training.face_quantize import served_scores


def teacher_probs(
    repo: ModelRepository,
    refs: Sequence[str],
    images: np.ndarray,
    classes: Sequence[str],
    progress: bool = True,
) -> np.ndarray:
    """(N, classes) float32: the mean of each teacher's served probabilities on ``images``
    (uint8 (N, 48, 48) faces). A teacher with other classes or another input is refused."""
    if not refs:
        raise ValueError("no teachers named")
    total = np.zeros((len(images), len(classes)), np.float64)
    for ref in refs:
        name, _, version = ref.partition("/")
        card = repo.card(name, repo.resolve(name, version or "production"))
        if tuple(card.classes) != tuple(classes) or not isinstance(card.input, ImageInput):
            raise ValueError(f"teacher {ref}: classes {card.classes} or its input do not match")
        onnx = repo.onnx_path(name, card.version).read_bytes()
        inputs = prepare(list(images), card.input)
        total += served_scores(onnx, card, inputs, f"teacher {card.ref}", progress)
    out: np.ndarray = (total / len(refs)).astype(np.float32)
    return out
