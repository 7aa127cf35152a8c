"""The check a model version must pass before a running process serves or shadows it.

A promotion reaches every running process by itself (``models/watch.py``), so a bad file
must be stopped there, not by a crash at the first frame: a version that fails any step
is refused with the reason and the serving version stays. The steps, in order:

(a) the card is valid and ``model.onnx`` has the sha256 the card records;
(b) ONNX Runtime loads it, and its input and output shapes agree with the card (image
    size and channels in the card's layout, or for a voice card (1, mels, frames) of its
    log-mel spec and window; one output per class);
(c) it scores a fixed, deterministic batch of crops (voice: of audio windows) into finite
    rows of one per class (each row summing to 1 when the card says the output is
    probabilities);
(d) when the version folder holds ``check.npz`` (``inputs``: a float32 tensor already
    preprocessed as the card says, ``outputs``: the probabilities the exporter got), it
    reproduces those outputs within ``CHECK_ATOL``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import ValidationError

from emostream.modalities import spec
from emostream.models.card import AudioInput, ImageInput, ModelCard
from emostream.models.repository import ModelMissingError, ModelRepository
from emostream.models.runner import Classifier, OnnxRunner, RunnerConfig

CHECK_FILE = "check.npz"
CHECK_ATOL = 1e-4
#: How far a probability row may sum from 1 (float32 softmax over a few classes).
SUM_TOLERANCE = 1e-3


class ModelRefused(ValueError):
    """A version that must not be served, and why (a sentence for logs and /readyz)."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"{ref} refused: {reason}")
        self.ref = ref
        self.reason = reason


def fixed_crops() -> list[np.ndarray]:
    """Deterministic BGR and gray crops of several sizes and shapes (same every call)."""
    rng = np.random.default_rng(20240613)
    shapes = [(64, 64, 3), (48, 80, 3), (120, 90, 3), (33, 33)]
    crops = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in shapes]
    crops.append(np.full((64, 64, 3), 128, np.uint8))  # flat grey: no texture at all
    return crops


def fixed_windows(spec: AudioInput) -> np.ndarray:
    """Deterministic windows of the card's length: silence, noise at two levels, a tone."""
    n = spec.window_samples
    rng = np.random.default_rng(20240613)
    t = np.arange(n, dtype=np.float32) / spec.sample_rate
    return np.stack(
        [
            np.zeros(n, np.float32),
            rng.normal(0, 0.01, n).astype(np.float32),
            rng.normal(0, 0.3, n).clip(-1, 1).astype(np.float32),
            (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
        ]
    )


def _expected_input(spec: ImageInput | AudioInput) -> tuple[int, int, int]:
    if isinstance(spec, AudioInput):
        return 1, spec.features.n_mels, spec.features.frames(spec.window_samples)
    if spec.layout == "NCHW":
        return spec.channels, spec.height, spec.width
    return spec.height, spec.width, spec.channels


def _shape_problem(
    runner: OnnxRunner, card: ModelCard, spec: ImageInput | AudioInput
) -> str | None:
    """Where the graph's declared shapes disagree with the card (symbolic dims agree)."""
    inputs = runner.session.get_inputs()[0].shape
    outputs = runner.session.get_outputs()[0].shape
    want = _expected_input(spec)
    what = "log-mel window" if isinstance(spec, AudioInput) else f"{spec.layout} image"
    if len(inputs) != 4:
        return f"input has {len(inputs)} dimensions, the card's {what} needs 4"
    for got, expected in zip(inputs[1:], want, strict=True):
        if isinstance(got, int) and got != expected:
            return f"input shape {inputs} does not fit the card's {what} {want}"
    if len(outputs) != 2:
        return f"output has {len(outputs)} dimensions, expected (batch, classes)"
    if isinstance(outputs[1], int) and outputs[1] != len(card.classes):
        return f"output has {outputs[1]} classes, the card names {len(card.classes)}"
    return None


def _rows_problem(rows: np.ndarray, n: int, card: ModelCard) -> str | None:
    if rows.shape != (n, len(card.classes)):
        return f"scored {n} inputs as {rows.shape}, expected ({n}, {len(card.classes)})"
    if not np.isfinite(rows).all():
        inputs = "crops" if card.input.kind == "image" else "windows"
        return f"scores on the fixed {inputs} are not finite"
    if card.output.kind == "probabilities":
        sums = rows.sum(axis=1)
        if np.any(rows < 0) or np.any(np.abs(sums - 1) > SUM_TOLERANCE):
            return f"output is not probabilities (row sums {np.round(sums, 4).tolist()})"
    return None


def _check_file_problem(classifier: Classifier, path: Path) -> str | None:
    try:
        with np.load(path) as data:
            inputs, outputs = data["inputs"], data["outputs"]
    except (OSError, ValueError, KeyError) as exc:
        return f"{CHECK_FILE} is unreadable (needs arrays 'inputs' and 'outputs'): {exc}"
    try:
        got = classifier.predict_tensor(np.ascontiguousarray(inputs, dtype=np.float32))
    except Exception as exc:  # ONNX Runtime rejects the tensor: a shape the card did not say
        return f"cannot run {CHECK_FILE} inputs {inputs.shape}: {type(exc).__name__}: {exc}"
    if got.shape != outputs.shape:
        return f"{CHECK_FILE} outputs are {outputs.shape}, the model gives {got.shape}"
    diff = float(np.max(np.abs(got - outputs))) if got.size else 0.0
    if not diff <= CHECK_ATOL:
        return f"outputs differ from {CHECK_FILE} by {diff:.2e} (allowed {CHECK_ATOL:.0e})"
    return None


def _fixed_scores(classifier: Classifier) -> tuple[np.ndarray, int]:
    """The model's rows on the fixed inputs of its modality, and how many inputs."""
    spec = classifier.card.input
    if isinstance(spec, AudioInput):
        windows = fixed_windows(spec)
        return classifier.predict_windows(windows), len(windows)
    crops = fixed_crops()
    return classifier.predict(crops), len(crops)


def load_checked(
    repo: ModelRepository,
    name: str,
    version: str,
    runner: RunnerConfig | None = None,
    modality: str = "face",
) -> Classifier:
    """The classifier of ``name/version`` once it passed every step; else ``ModelRefused``.

    ``modality`` is what the caller serves: a card of another modality is refused.
    """
    ref = f"{name}/{version}"
    try:
        card = repo.card(name, version)
        path = repo.onnx_path(name, version, verify=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelRefused(ref, f"invalid card ({where}: {first['msg']})") from None
    except ModelMissingError as exc:
        raise ModelRefused(ref, exc.detail) from None
    except (LookupError, ValueError, OSError) as exc:
        raise ModelRefused(ref, str(exc)) from None
    if card.name != name or card.version != version:
        raise ModelRefused(ref, f"its card says it is {card.ref}")
    kind = spec(modality).input_kind
    if card.input.kind != kind or card.modality != modality:
        raise ModelRefused(
            ref, f"a {card.task} model ({card.input.kind} input) cannot score {modality}"
        )
    try:
        onnx = OnnxRunner(path, runner)
    except Exception as exc:  # ONNX Runtime raises its own types for a bad graph
        raise ModelRefused(
            ref, f"ONNX Runtime cannot load it: {type(exc).__name__}: {exc}"
        ) from None
    problem = _shape_problem(onnx, card, card.input)
    classifier = Classifier(card, onnx)
    if problem is None:
        try:
            rows, n = _fixed_scores(classifier)
            problem = _rows_problem(rows, n, card)
        except Exception as exc:
            problem = f"fails on the fixed inputs: {type(exc).__name__}: {exc}"
    if problem is None and (repo.version_dir(name, version) / CHECK_FILE).is_file():
        problem = _check_file_problem(classifier, repo.version_dir(name, version) / CHECK_FILE)
    if problem is not None:
        raise ModelRefused(ref, problem)
    return classifier
