"""The registered modalities: every ``ModalitySpec`` subclass in this package, by name.

Found by importing each module of the package (as Frigate finds its detector plugins), so
a new modality is a new module here (and its analyzer): nothing else lists them. A module
that fails to import is logged and left out; the others still serve.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

from emostream.modalities.base import MediaTrack, ModalitySpec, ModalityView, Service, TrackSink

__all__ = [
    "MediaTrack",
    "ModalitySpec",
    "ModalityView",
    "Service",
    "TrackSink",
    "names",
    "register",
    "registered",
    "spec",
    "unregister",
]

log = logging.getLogger(__name__)


_REGISTRY: dict[str, ModalitySpec] = {}
_DISCOVERED: list[bool] = []


def _specs() -> dict[str, ModalitySpec]:
    if not _DISCOVERED:
        _DISCOVERED.append(True)
        for found in _discover():
            _REGISTRY.setdefault(found.name, found)
    return _REGISTRY


def _discover() -> list[ModalitySpec]:
    found: list[ModalitySpec] = []
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module == "base":
            continue
        try:
            loaded = importlib.import_module(f"{__name__}.{module}")
        except Exception as exc:  # one broken modality must not take the others down
            log.error("modality module %s not loaded: %r", module, exc)
            continue
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, ModalitySpec)
                and value is not ModalitySpec
                and value.__module__ == loaded.__name__
            ):
                found.append(value())
    return found


def register(modality: ModalitySpec) -> None:
    """Add a modality defined outside this package (a plugin, a test)."""
    _specs()[modality.name] = modality


def unregister(name: str) -> None:
    _specs().pop(name, None)


def registered() -> list[ModalitySpec]:
    """Every modality, in name order."""
    return list(_specs().values())


def names() -> tuple[str, ...]:
    return tuple(_specs())


def spec(name: str) -> ModalitySpec:
    """The spec of ``name`` (``KeyError`` naming the known ones for anything else)."""
    try:
        return _specs()[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; known: {', '.join(_specs())}") from None
