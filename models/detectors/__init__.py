"""Face detector backends, one file each, found by looking (see ``base.py``).

``DetectorConfig`` is the union of every backend's config, told apart by ``type`` (a config
without one is the default, BlazeFace); ``create_detector`` builds the backend a config names.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag

from emostream.models.detectors.base import DetectorConfigBase, FaceDetector

DEFAULT = "blazeface"


def _discover() -> dict[str, type[FaceDetector]]:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    found: dict[str, type[FaceDetector]] = {}
    for cls in FaceDetector.__subclasses__():
        key = cls.config_class.model_fields["type"].default
        if key in found:
            raise TypeError(f"two detectors are called {key!r}: {found[key]} and {cls}")
        found[key] = cls
    return found


#: Backend name -> detector class, for every backend file in this package.
BACKENDS = _discover()


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", DEFAULT))
    return str(getattr(value, "type", DEFAULT))


if TYPE_CHECKING:
    DetectorConfig = DetectorConfigBase
else:
    DetectorConfig = Annotated[
        Union[tuple(Annotated[c.config_class, Tag(k)] for k, c in BACKENDS.items())],  # noqa: UP007
        Discriminator(_backend_of),
    ]


def default_detector() -> DetectorConfigBase:
    return BACKENDS[DEFAULT].config_class.model_validate({})


def create_detector(config: DetectorConfigBase | None, model_root: Path) -> FaceDetector:
    """The backend ``config.type`` names (BlazeFace when None)."""
    config = config or default_detector()
    backend = BACKENDS.get(config.type)
    if backend is None:
        raise ValueError(f"unknown detector {config.type!r}; known: {', '.join(BACKENDS)}")
    return backend.from_config(config, model_root)
