"""Accuracy, per-class recall, confusion matrix and predicted class mix of a classifier.

The predicted mix on the validation split becomes the card's reference distribution, the
baseline that live drift is measured against.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emostream.extras import require
from emostream.models.card import Evaluation
from emostream.models.runner import Classifier
from emostream.training import fer2013


@dataclass
class Report:
    classes: list[str]
    confusion: np.ndarray  # rows: true class, columns: predicted (card class order)
    predictions: np.ndarray  # (N,) predicted indices

    @property
    def samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.samples))

    def per_class_recall(self) -> dict[str, float]:
        rows = self.confusion.sum(axis=1)
        return {
            c: round(float(self.confusion[i, i] / rows[i]), 4) if rows[i] else 0.0
            for i, c in enumerate(self.classes)
        }

    def predicted_distribution(self) -> dict[str, float]:
        counts = np.bincount(self.predictions, minlength=len(self.classes)).astype(float)
        counts /= counts.sum()
        return {c: round(float(p), 5) for c, p in zip(self.classes, counts, strict=True)}

    def to_evaluation(self, dataset: str, split: str, command: str) -> Evaluation:
        recall = self.per_class_recall()
        return Evaluation(
            dataset=dataset,
            split=split,
            samples=self.samples,
            accuracy=round(self.accuracy, 4),
            macro_recall=round(float(np.mean(list(recall.values()))), 4),
            per_class_recall=recall,
            command=command,
            measured_at=datetime.now(UTC),
        )

    def confusion_png(self, title: str) -> bytes:
        require("matplotlib", extra="convert")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        norm = self.confusion / np.maximum(1, self.confusion.sum(axis=1, keepdims=True))
        fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(self.classes)), self.classes, rotation=45, ha="right")
        ax.set_yticks(range(len(self.classes)), self.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(self.classes)):
            for j in range(len(self.classes)):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ax.set_title(f"{title}\naccuracy {self.accuracy:.3f} on {self.samples} faces")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return buf.getvalue()


def evaluate_fer2013(
    classifier: Classifier,
    data_root: Path,
    split: str = "val",
    batch_size: int = 256,
    progress: bool = True,
) -> Report:
    """Score every image of a FER2013 split (whole 48x48 crop, resized per the card)."""
    items = fer2013.samples(data_root, split)
    classes = classifier.card.classes
    missing = {s.label for s in items} - set(classes)
    if missing:
        raise ValueError(f"dataset classes {sorted(missing)} are not model classes {classes}")
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    preds: list[np.ndarray] = []
    with tqdm(total=len(items), desc=f"FER2013 {split}", unit="face", disable=not progress) as bar:
        for chunk, images in fer2013.batches(items, batch_size):
            p = classifier.predict(images).argmax(axis=1)
            for s, k in zip(chunk, p, strict=True):
                confusion[index[s.label], k] += 1
            preds.append(p)
            bar.update(len(chunk))
    return Report(list(classes), confusion, np.concatenate(preds))
