"""A Triton-style versioned model repository on disk.

Layout: ``<root>/<name>/<version>/model.onnx`` + ``model.json`` (the card), and
``<root>/<name>/aliases.json`` holding ``{"production": "<version>", "history": [...]}``.
Promotion only rewrites the alias file (atomically), so a worker can pick up a new version
while sessions keep running.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from emostream.models.card import ModelCard

PRODUCTION = "production"


class ModelMissingError(LookupError):
    """A model (or the version an alias names) is not in the repository."""

    def __init__(self, name: str, detail: str) -> None:
        hint = PULL_HINTS.get(name, UNKNOWN_HINT)
        super().__init__(f"model {name!r}: {detail}; {hint}")
        self.name = name


#: How each known model is produced, for error messages that tell the user what to run.
PULL_HINTS = {
    "face-emotion": "create it with `emostream models pull face-emotion` (or `make models`)",
    "face-detector": "create it with `emostream models pull face-detector` (or `make models`)",
}
#: Models this release cannot make (no voice model exists yet): say so, never a made-up command.
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
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            return []
        found = [p.name for p in d.iterdir() if (p / "model.json").is_file()]
        return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    def aliases(self, name: str) -> dict[str, object]:
        f = self.root / name / "aliases.json"
        if not f.is_file():
            return {}
        data: dict[str, object] = json.loads(f.read_text())
        return data

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
        self, card: ModelCard, onnx_bytes: bytes, extra: dict[str, bytes] | None = None
    ) -> Path:
        """Write a version folder; the card's sha256 is set from the bytes written."""
        d = self.version_dir(card.name, card.version)
        card = card.model_copy(update={"sha256": hashlib.sha256(onnx_bytes).hexdigest()})
        _atomic_write(d / "model.onnx", onnx_bytes)
        for fname, data in (extra or {}).items():
            _atomic_write(d / fname, data)
        _atomic_write(d / "model.json", (card.model_dump_json(indent=2) + "\n").encode())
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
        _atomic_write(
            self.root / name / "aliases.json", (json.dumps(data, indent=2) + "\n").encode()
        )
        return previous
