"""A Triton-style versioned model repository on disk.

Layout: ``<root>/<name>/<version>/model.onnx`` + ``model.json`` (the card), and
``<root>/<name>/aliases.json`` holding ``{"production": "<version>", "history": [...]}``
and, while a candidate is evaluated beside production, ``"shadow": "<version>"`` and
``"shadow_fraction": F``. Promotion only rewrites the alias file (atomically), so a running
process picks up a new version while sessions keep running (``models/watch.py``). A version
is written whole into a hidden sibling folder and renamed into place, so no reader ever
sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from emostream.models.card import ModelCard
from emostream.paths import ARTEFACTS

PRODUCTION = "production"
SHADOW = "shadow"
SHADOW_FRACTION = "shadow_fraction"
#: The version ``production`` starts at in a repository that has none yet, best first:
#: face-emotion/3 is the int8 quantization of face-emotion/2 (``emostream train
#: face-quantize``: about 3x faster on a CPU, 0.06 points lower on FER2013 val) and
#: face-emotion/2 the float network this project trained; both ship inside the package
#: (``models/artefacts/face-emotion/<N>/``, docs/TRAINING.md), so /2 is there to roll back to.
#: face-emotion/1 is the imported mini-Xception that ``models pull`` converts, kept for
#: comparison and rollback.
#: voice-emotion/1 was trained by this project on RAVDESS (``emostream train voice``) and
#: ships the same way; it has no pretrained source.
DEFAULT_VERSIONS: dict[str, tuple[str, ...]] = {
    "face-emotion": ("4", "3", "2", "1"),
    "voice-emotion": ("1",),
}
#: The package's artefacts folder, where the versions this project trained ship
#: (``install_bundled``).
BUNDLED_ROOT = Path(__file__).resolve().parent / ARTEFACTS
#: Prefix of the folder a version is written into before it is renamed into place.
INCOMING = ".incoming-"


class VersionExistsError(FileExistsError):
    """A version is never overwritten: a new model is a new version number."""


@dataclass(frozen=True)
class Shadow:
    """The candidate version scored beside production, and the share of faces it sees."""

    version: str
    fraction: float


class ModelMissingError(LookupError):
    """A model (or the version an alias names) is not in the repository."""

    def __init__(self, name: str, detail: str) -> None:
        hint = PULL_HINTS.get(name, UNKNOWN_HINT)
        super().__init__(f"model {name!r}: {detail}; {hint}")
        self.name = name
        self.detail = detail


#: How each known model is produced, for error messages that tell the user what to run.
PULL_HINTS = {
    "face-emotion": "create it with `emostream models pull face-emotion` (or `make models`)",
    "face-detector": "create it with `emostream models pull face-detector` (or `make models`)",
    "voice-activity": "create it with `emostream models pull voice-activity` (or `make models`)",
    "yunet": "create it with `emostream models pull yunet` (or `make models`)",
    "retinaface": "create it with `emostream models pull retinaface` (or `make models`)",
    "mtcnn": "create it with `emostream models pull mtcnn` (torch needed to convert it)",
    "voice-emotion": "install the shipped one with `emostream models pull voice-emotion`, or "
    "train one with `emostream train voice --data <RAVDESS folder> --promote` "
    "(docs/TRAINING.md)",
}
#: Models this release cannot make: say so, never a made-up command.
UNKNOWN_HINT = (
    "this release has no command that makes it: register a version with its card in the "
    'model repository (docs/ARCHITECTURE.md, "Models")'
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artefacts are meant to be read by workers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _check_fraction(fraction: float) -> float:
    if not (isinstance(fraction, int | float) and math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(f"shadow fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


def _history(aliases: dict[str, object]) -> list[str]:
    raw = aliases.get("history", [])
    return [v for v in raw if isinstance(v, str)] if isinstance(raw, list) else []


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and self.versions(p.name)
        )

    def versions(self, name: str) -> list[str]:
        """Complete versions only: a dot-folder (a version being written) is not one."""
        d = self.root / name
        if not d.is_dir():
            return []
        found = [
            p.name
            for p in d.iterdir()
            if not p.name.startswith(".") and (p / "model.json").is_file()
        ]
        return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    def aliases(self, name: str) -> dict[str, object]:
        f = self.root / name / "aliases.json"
        if not f.is_file():
            return {}
        data: dict[str, object] = json.loads(f.read_text())
        return data

    def shadow(self, name: str) -> Shadow | None:
        """The shadow candidate aliases.json names, or None (absent keys mean none).

        Raises ValueError when the entry is malformed (not a version string, or a fraction
        outside (0, 1]), so a reader can refuse it with that reason.
        """
        data = self.aliases(name)
        version = data.get(SHADOW)
        if version is None:
            return None
        if not isinstance(version, str):
            raise ValueError(f"model {name!r}: shadow must name a version, got {version!r}")
        fraction = data.get(SHADOW_FRACTION, 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"model {name!r}: shadow_fraction must be a number")
        return Shadow(version, _check_fraction(fraction))

    def resolve(self, name: str, alias_or_version: str = PRODUCTION) -> str:
        """The version an alias points to (or the version itself, if it exists)."""
        versions = self.versions(name)
        if not versions:
            raise ModelMissingError(name, f"no versions in {self.root / name}")
        if alias_or_version in versions:
            return alias_or_version
        target = self.aliases(name).get(alias_or_version)
        if not isinstance(target, str):
            raise ModelMissingError(name, f"no alias {alias_or_version!r}")
        if target not in versions:
            raise ModelMissingError(name, f"alias {alias_or_version!r} names missing {target!r}")
        return target

    def next_version(self, name: str) -> str:
        """One more than the highest numbered version (``1`` for a new model)."""
        numbers = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def card(self, name: str, version: str) -> ModelCard:
        f = self.version_dir(name, version) / "model.json"
        if not f.is_file():
            raise ModelMissingError(name, f"no card at {f}")
        return ModelCard.model_validate_json(f.read_text())

    def onnx_path(self, name: str, version: str, *, verify: bool = True) -> Path:
        """The ONNX file; with ``verify`` its sha256 must match the card (no silent swaps)."""
        path = self.version_dir(name, version) / "model.onnx"
        if not path.is_file():
            raise ModelMissingError(name, f"version {version} has a card but no {path.name}")
        if verify:
            want = self.card(name, version).sha256
            got = sha256_file(path)
            if got != want:
                raise ModelMissingError(
                    name, f"{path} sha256 {got[:12]}… does not match its card ({want[:12]}…)"
                )
        return path

    # -- writing -------------------------------------------------------------------------
    def register(
        self,
        card: ModelCard,
        onnx_bytes: bytes,
        extra: dict[str, bytes] | None = None,
        *,
        replace: bool = False,
    ) -> Path:
        """Write a version folder whole, then rename it into place; the card's sha256 is set
        from the bytes written.

        Everything goes into ``<name>/.incoming-<version>-<random>/`` first, so a crash
        halfway leaves only a dot-folder that ``versions()`` ignores. An existing version is
        refused (``VersionExistsError``) unless ``replace``: the importers' ``--force``
        re-creates its own version, swapping the old folder out by two renames.
        """
        d = self.version_dir(card.name, card.version)
        if d.exists() and not replace:
            raise VersionExistsError(
                f"model {card.name!r} version {card.version!r} already exists in {d.parent}; "
                "a version is never overwritten: register a new version number"
            )
        card = card.model_copy(update={"sha256": hashlib.sha256(onnx_bytes).hexdigest()})
        d.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=d.parent, prefix=f"{INCOMING}{card.version}-"))
        try:
            os.chmod(staging, 0o755)  # mkdtemp makes 0700; workers must read it
            _write_file(staging / "model.onnx", onnx_bytes)
            for fname, data in (extra or {}).items():
                _write_file(staging / fname, data)
            _write_file(staging / "model.json", (card.model_dump_json(indent=2) + "\n").encode())
            for f in staging.iterdir():
                os.chmod(f, 0o644)
            if d.exists():  # replace: move the old one aside (dot-named), then swap in
                old = Path(tempfile.mkdtemp(dir=d.parent, prefix=f".replaced-{card.version}-"))
                os.replace(d, old / "v")
                os.rename(staging, d)
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.rename(staging, d)
                except OSError as exc:  # another writer got there first
                    raise VersionExistsError(
                        f"model {card.name!r} version {card.version!r} appeared in "
                        f"{d.parent} while it was being written: {exc}"
                    ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return d

    def set_alias(self, name: str, version: str, alias: str = PRODUCTION) -> None:
        if version not in self.versions(name):
            raise ModelMissingError(name, f"cannot point {alias!r} at missing version {version!r}")
        data = self.aliases(name)
        history = _history(data)
        current = data.get(alias)
        if isinstance(current, str) and current != version:
            history.append(current)
        data[alias] = version
        data["history"] = history[-20:]
        self._write_aliases(name, data)

    def set_shadow(self, name: str, version: str, fraction: float = 1.0) -> None:
        """Name a candidate to score beside production on ``fraction`` of the faces."""
        fraction = _check_fraction(fraction)
        if version not in self.versions(name):
            raise ModelMissingError(name, f"cannot shadow missing version {version!r}")
        data = self.aliases(name)
        data[SHADOW], data[SHADOW_FRACTION] = version, fraction
        self._write_aliases(name, data)

    def clear_shadow(self, name: str) -> None:
        """Stop shadow evaluation (nothing to do when none is set)."""
        data = self.aliases(name)
        if SHADOW in data or SHADOW_FRACTION in data:
            data.pop(SHADOW, None)
            data.pop(SHADOW_FRACTION, None)
            self._write_aliases(name, data)

    def ensure_production(self, name: str) -> str:
        """The version ``production`` names; if unset, point it at the best default present."""
        current = self.aliases(name).get(PRODUCTION)
        if isinstance(current, str) and current in self.versions(name):
            return current
        for version in DEFAULT_VERSIONS.get(name, ()):
            if version in self.versions(name):
                try:
                    self.onnx_path(name, version)  # verifies the sha256
                except ModelMissingError:
                    continue
                self.set_alias(name, version)
                return version
        raise ModelMissingError(name, "none of its default versions is present")

    def install_bundled(self, name: str) -> list[str]:
        """Copy the versions this project trained, which ship in the package, into this
        repository when it lives elsewhere (``EMOSTREAM_MODEL_ROOT``, an image's folder)."""
        shipped = ModelRepository(BUNDLED_ROOT)
        if shipped.root == self.root.resolve():
            return []
        copied = []
        for version in shipped.versions(name):
            card = shipped.card(name, version)
            if card.source.kind != "training" or version in self.versions(name):
                continue
            folder = shipped.version_dir(name, version)
            onnx = shipped.onnx_path(name, version).read_bytes()  # sha256 verified
            extra = {
                f.name: f.read_bytes()
                for f in folder.iterdir()
                if f.is_file() and f.name not in ("model.onnx", "model.json")
            }
            self.register(card, onnx, extra)
            copied.append(version)
        return copied

    def _write_aliases(self, name: str, data: dict[str, object]) -> None:
        _atomic_write(
            self.root / name / "aliases.json", (json.dumps(data, indent=2) + "\n").encode()
        )

    def _rollback_plan(self, name: str, alias: str) -> tuple[str, list[str]]:
        data = self.aliases(name)
        history = _history(data)
        versions = self.versions(name)
        while history:
            previous = history.pop()
            if previous in versions and previous != data.get(alias):
                return previous, history
        raise ModelMissingError(name, f"no earlier version of {alias!r} to roll back to")

    def rollback_target(self, name: str, alias: str = PRODUCTION) -> str:
        """The version :meth:`rollback` would point the alias at (nothing is written)."""
        return self._rollback_plan(name, alias)[0]

    def rollback(self, name: str, alias: str = PRODUCTION) -> str:
        """Point the alias back at the version it named before the last promotion."""
        previous, history = self._rollback_plan(name, alias)
        data = self.aliases(name)
        data[alias] = previous
        data["history"] = history
        self._write_aliases(name, data)
        return previous
