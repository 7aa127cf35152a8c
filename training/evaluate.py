"""Accuracy, per-class recall, confusion matrix and predicted class mix of a classifier.

The predicted mix on the validation split becomes the card's reference distribution, the
baseline that live drift is measured against.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

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
    probabilities: np.ndarray | None = None  # (N, classes), for calibration
    labels: np.ndarray | None = None  # (N,) true indices, beside the probabilities

    @classmethod
    def from_probabilities(
        cls, classes: list[str], labels: np.ndarray, probabilities: np.ndarray
    ) -> Report:
        k = len(classes)
        preds = probabilities.argmax(axis=1)
        confusion = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
        return cls(classes, confusion, preds, probabilities, labels)

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

    def per_class_precision(self) -> dict[str, float]:
        cols = self.confusion.sum(axis=0)
        return {
            c: round(float(self.confusion[i, i] / cols[i]), 4) if cols[i] else 0.0
            for i, c in enumerate(self.classes)
        }

    def per_class_f1(self) -> dict[str, float]:
        p, r = self.per_class_precision(), self.per_class_recall()
        return {c: round(2 * p[c] * r[c] / (p[c] + r[c]), 4) if p[c] + r[c] else 0.0 for c in p}

    @property
    def macro_f1(self) -> float:
        return float(np.mean(list(self.per_class_f1().values())))

    def calibration(self, bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per confidence bin: mean confidence, accuracy, count (top-1 probability)."""
        if self.probabilities is None or self.labels is None:
            raise ValueError("calibration needs the probabilities and labels")
        conf = self.probabilities.max(axis=1)
        right = (self.probabilities.argmax(axis=1) == self.labels).astype(float)
        which = np.minimum((conf * bins).astype(int), bins - 1)
        count = np.bincount(which, minlength=bins).astype(float)
        mean_conf = np.bincount(which, conf, bins) / np.maximum(count, 1)
        acc = np.bincount(which, right, bins) / np.maximum(count, 1)
        return mean_conf, acc, count

    @property
    def ece(self) -> float:
        """Expected calibration error: |accuracy - confidence| averaged over bins by count."""
        mean_conf, acc, count = self.calibration()
        return float((np.abs(acc - mean_conf) * count).sum() / max(1.0, count.sum()))

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
            macro_f1=round(self.macro_f1, 4),
            per_class_precision=self.per_class_precision(),
            ece=None if self.probabilities is None else round(self.ece, 4),
            command=command,
            measured_at=datetime.now(UTC),
        )

    def confusion_png(self, title: str, unit: str = "faces") -> bytes:
        plt = _pyplot()
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
        ax.set_title(f"{_wrap(title)}\naccuracy {self.accuracy:.3f} on {self.samples} {unit}")
        fig.colorbar(im, ax=ax, fraction=0.046)
        return _png(fig)

    def reliability_png(self, title: str, bins: int = 15, unit: str = "faces") -> bytes:
        """Accuracy against confidence per bin (the diagonal is perfect calibration)."""
        return reliability_panels_png([(title, self)], bins, unit)

    def draw_reliability(self, ax: Any, hx: Any, title: str, bins: int, unit: str) -> None:
        """The reliability bars on ``ax`` and the samples per bin on ``hx`` below it."""
        mean_conf, acc, count = self.calibration(bins)
        edges = np.linspace(0, 1, bins + 1)
        used = count > 0
        ax.bar(
            edges[:-1][used],
            acc[used],
            width=1 / bins,
            align="edge",
            alpha=0.75,
            edgecolor="black",
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
        ax.plot(
            mean_conf[used],
            acc[used],
            "o-",
            color="tab:red",
            ms=3,
            label="at the bin's mean confidence",
        )
        ax.set_ylabel("accuracy")
        ax.set_title(f"{_wrap(title)}\nexpected calibration error {self.ece:.3f}")
        ax.legend(loc="upper left", fontsize=8)
        hx.bar(edges[:-1], count, width=1 / bins, align="edge", color="tab:blue", alpha=0.6)
        hx.set_xlabel("confidence (top-1 probability)")
        hx.set_ylabel(unit)


def reliability_panels_png(
    panels: list[tuple[str, Report]], bins: int = 15, unit: str = "faces"
) -> bytes:
    """Reliability diagrams side by side (a calibration's before and after), one per
    ``(title, report)``."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        2,
        len(panels),
        figsize=(5.6 * len(panels), 6.4),
        dpi=100,
        sharex=True,
        height_ratios=[3, 1],
        squeeze=False,
    )
    for k, (title, report) in enumerate(panels):
        report.draw_reliability(axes[0, k], axes[1, k], title, bins, unit)
    return _png(fig)


def _wrap(title: str, width: int = 58) -> str:
    """A figure title in lines that fit the figure's width (a long one is cut off)."""
    return textwrap.fill(title, width)


def _pyplot() -> ModuleType:
    require("matplotlib", extra="convert")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

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
