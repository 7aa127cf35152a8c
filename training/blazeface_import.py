"""Import the BlazeFace face detectors from the ``mediapipe`` wheel on PyPI (Apache-2.0).

Steps: fetch the pinned wheel (pip download, or a local copy named by
``EMOSTREAM_MEDIAPIPE_WHEEL``), check its sha256, read the TFLite files out of the zip in
memory, convert them with our own converter (``tflite_onnx``), store the decoding spec
(anchors, scales, threshold) in the ONNX metadata, and register:

- ``face-detector/1``: ``face_detection_short_range.tflite`` (128x128, 896 anchors)
- ``face-detector/2``: ``face_detection_full_range_sparse.tflite`` (192x192, 2304 anchors)

mediapipe 0.10.21 is the last release whose wheel carries these files (0.10.30+ dropped the
legacy ``solutions`` and their models). The wheel is platform-specific only because of its
native code; the ``.tflite`` members are the same in every build, and we pin one build
(cp311, manylinux_2_28 x86_64) and download it whatever the running interpreter is.
No TensorFlow and no mediapipe are installed or imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import typing
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import onnx

from emostream.models.card import ImageInput, ModelCard, Output, Source
from emostream.models.detectors.ssd import (
    FULL_RANGE,
    METADATA_KEY,
    MODEL_NAME,
    SHORT_RANGE,
    BlazeFaceSpec,
)
from emostream.models.repository import PRODUCTION, ModelRepository, sha256_file
from emostream.training import tflite_onnx
from emostream.training.wheels import PinnedWheel, WheelChecksumError

log = logging.getLogger(__name__)

__all__ = ["WheelChecksumError", "fetch_wheel", "import_blazeface"]

NAME = MODEL_NAME
TASK = "face-detection"
MP_PACKAGE = "mediapipe"
MP_VERSION = "0.10.21"
MP_WHEEL = f"mediapipe-{MP_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
MP_WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
_MEMBER_DIR = "mediapipe/modules/face_detection"


class Variant(typing.NamedTuple):
    version: str
    member: str
    member_sha256: str
    spec: BlazeFaceSpec
    title: str


VARIANTS = {
    "short": Variant(
        "1",
        f"{_MEMBER_DIR}/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        SHORT_RANGE,
        "BlazeFace short range (128x128), for faces within about 2 m of the camera",
    ),
    "full": Variant(
        "2",
        f"{_MEMBER_DIR}/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        FULL_RANGE,
        "BlazeFace full range (192x192, sparse weights), for faces up to about 5 m away",
    ),
}
#: The version ``production`` names after a first import (see docs: short range is the
#: better fit for webcam and call frames and the cheaper one).
DEFAULT_VARIANT = "short"

INTENDED_USE = (
    "Finds human faces so that emotion models can score them; boxes and scores only, "
    "no identity. Not for recognising or tracking individuals across sessions."
)


MP_PIN = PinnedWheel(
    MP_PACKAGE,
    MP_VERSION,
    MP_WHEEL,
    MP_WHEEL_SHA256,
    "EMOSTREAM_MEDIAPIPE_WHEEL",
    # one fixed build whatever interpreter runs the import: the .tflite members are the same
    (
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--platform",
        "manylinux_2_28_x86_64",
    ),
)


def fetch_wheel(dest: Path | None = None) -> Path:
    """The pinned wheel, from ``EMOSTREAM_MEDIAPIPE_WHEEL``, the cache, or PyPI."""
    return MP_PIN.fetch(dest)


def read_tflite(wheel: Path, variant: str) -> bytes:
    v = VARIANTS[variant]
    with zipfile.ZipFile(wheel) as z:
        data = z.read(v.member)
    got = hashlib.sha256(data).hexdigest()
    if got != v.member_sha256:
        raise WheelChecksumError(f"{v.member}: sha256 {got}, expected {v.member_sha256}")
    return data


def convert_variant(tflite_bytes: bytes, variant: str) -> bytes:
    """ONNX bytes with the decoding spec in the metadata (covered by the card's sha256)."""
    v = VARIANTS[variant]
    model = tflite_onnx.convert(
        tflite_bytes,
        input_name="input",
        output_names=["regressors", "classificators"],
        doc=f"{NAME}/{v.version}: {v.title}; from {MP_WHEEL}:{v.member}",
    )
    onnx.helper.set_model_props(model, {METADATA_KEY: v.spec.model_dump_json()})
    data: bytes = model.SerializeToString()
    return data


def build_card(variant: str, onnx_bytes: bytes) -> ModelCard:
    v = VARIANTS[variant]
    s = v.spec
    data = {
        "name": NAME,
        "version": v.version,
        "task": TASK,
        "modality": "face",
        "classes": ["face"],
        "input": ImageInput(
            name="input",
            layout="NCHW",
            height=s.input_size,
            width=s.input_size,
            color="rgb",
            scale=2.0 / 255.0,
            offset=-1.0,
            interpolation="linear",
        ),
        "output": Output(name="classificators", kind="logits"),
        "source": Source(
            kind="pypi-wheel",
            description=f"{v.title}. BlazeFace (Bazarevsky et al., 2019) as shipped in the "
            "mediapipe wheel; converted from TFLite to ONNX by "
            "emostream.training.tflite_onnx",
            package=MP_PACKAGE,
            version=MP_VERSION,
            file=v.member,
            sha256=MP_WHEEL_SHA256,
            url=f"https://pypi.org/project/{MP_PACKAGE}/{MP_VERSION}/",
            authors="Google LLC (MediaPipe)",
        ),
        "licence": "Apache-2.0 (mediapipe wheel: code and bundled models)",
        "intended_use": INTENDED_USE,
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "created": datetime.now(UTC),
        "notes": [
            "Detector, not a classifier: outputs regressors [N, K, 16] (box x, y, w, h and "
            "6 keypoints per anchor) and classificators [N, K, 1] (face logit per anchor).",
            f"Input letterboxed to {s.input_size}x{s.input_size} RGB (aspect kept, black "
            "borders), pixels scaled to [-1, 1].",
            f"Decoding spec (SSD anchors, scales, min score {s.min_score}) is stored in the "
            f"ONNX metadata under {METADATA_KEY!r}; see models/detectors/plugins/blazeface.py.",
        ],
    }
    return ModelCard.model_validate(data)


def import_blazeface(
    repo: ModelRepository,
    *,
    variants: tuple[str, ...] = ("short", "full"),
    force: bool = False,
    wheel: Path | None = None,
) -> dict[str, Path]:
    """Create ``face-detector/1`` (short) and ``/2`` (full), idempotent; set ``production``.

    Returns the version folder per variant. ``production`` is pointed at the short-range
    version when no alias exists yet.
    """
    out: dict[str, Path] = {}
    for variant in variants:
        v = VARIANTS[variant]
        vdir = repo.version_dir(NAME, v.version)
        onnx_file, card_file = vdir / "model.onnx", vdir / "model.json"
        if not force and onnx_file.is_file() and card_file.is_file():
            if json.loads(card_file.read_text()).get("sha256") == sha256_file(onnx_file):
                log.info("%s/%s already present", NAME, v.version)
                out[variant] = vdir
                continue
            log.warning("re-importing %s/%s: sha256 mismatch", NAME, v.version)
        wheel = wheel or fetch_wheel()
        onnx_bytes = convert_variant(read_tflite(wheel, variant), variant)
        card = build_card(variant, onnx_bytes)  # --force or a damaged copy: replace it
        out[variant] = repo.register(card, onnx_bytes, replace=True)
    default = VARIANTS[DEFAULT_VARIANT].version
    if PRODUCTION not in repo.aliases(NAME) and default in repo.versions(NAME):
        repo.set_alias(NAME, default)
    return out
