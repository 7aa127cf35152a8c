"""Face detectors as plugins, after Frigate's ``detector_types.py``.

``base.py`` is the interface; every module in ``plugins/`` is one backend (its config and
its ``FaceDetector``), found by looking, so adding a detector is adding one file there. The
helpers the plugins share live beside ``plugins/`` and are never taken for plugins.

Each plugin is imported on its own: one that raises (an ``ImportError`` for a package this
install lacks, or anything else) is logged and listed in ``UNAVAILABLE`` with the reason,
and the others stay available. ``DetectorConfig`` is the union of the available backends'
configs, told apart by ``type`` (a config without one is the default, YuNet); naming an
unavailable backend fails validation with its reason. ``create_detector`` builds the
backend a config names.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag, model_validator

from emostream.models.detectors import plugins
from emostream.models.detectors.base import DetectorConfigBase, FaceDetector

log = logging.getLogger(__name__)

DEFAULT = "yunet"


class DetectorUnavailableError(RuntimeError):
    """The configured detector's plugin could not be imported (the reason is the message)."""


@dataclass(frozen=True)
class Discovery:
    """What ``discover`` found: backend name -> class, and plugin name -> why it is missing."""

    backends: dict[str, type[FaceDetector]]
    unavailable: dict[str, str]


def _detectors_in(module: ModuleType) -> list[type[FaceDetector]]:
    """The concrete ``FaceDetector`` classes a plugin module defines (not those it imports)."""
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, FaceDetector)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]


def discover(package: ModuleType = plugins) -> Discovery:
    """Import every module of ``package`` (each on its own) and collect its detectors."""
    backends: dict[str, type[FaceDetector]] = {}
    unavailable: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found: dict[str, type[FaceDetector]] = {}
            for cls in _detectors_in(module):
                key = cls.config_class.model_fields["type"].default
                if not isinstance(key, str):
                    raise TypeError(f"{cls.__name__}.config_class has no default `type`")
                if key in backends or key in found:
                    other = backends.get(key) or found[key]
                    raise TypeError(f"detector {key!r} is already {other.__module__}")
                found[key] = cls
            if not found:
                raise TypeError("defines no FaceDetector subclass")
            backends.update(found)
        except Exception as e:  # one plugin must not take the others down
            reason = f"{type(e).__name__}: {e}"
            unavailable[info.name] = reason
            log.warning("face detector plugin %r is unavailable: %s", info.name, reason)
            log.debug("face detector plugin %r", info.name, exc_info=True)
    return Discovery(backends, unavailable)


_FOUND = discover()
#: Backend name -> detector class, for every plugin that imported.
BACKENDS: dict[str, type[FaceDetector]] = _FOUND.backends
#: Plugin name -> why it could not be imported (``"ImportError: No module named 'x'"``).
UNAVAILABLE: dict[str, str] = _FOUND.unavailable


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", DEFAULT))
    return str(getattr(value, "type", DEFAULT))


def unavailable_reason(name: str, reasons: dict[str, str] | None = None) -> str:
    why = (UNAVAILABLE if reasons is None else reasons)[name]
    return f"the {name!r} face detector is unavailable here: {why}"


def _refusing(reasons: dict[str, str]) -> type[DetectorConfigBase]:
    """A config that stands for the plugins that failed to import: validating one fails
    with its reason."""

    class Unavailable(DetectorConfigBase):
        @model_validator(mode="before")
        @classmethod
        def _refuse(cls, data: Any) -> Any:
            raise ValueError(unavailable_reason(_backend_of(data), reasons))

    return Unavailable


def config_union(found: Discovery) -> Any:
    """The settings' detector type: the backends' configs by ``type``, and the unavailable
    plugins (by file name) refusing with their reason."""
    tagged = [Annotated[c.config_class, Tag(k)] for k, c in found.backends.items()]
    refusing = _refusing(found.unavailable)
    tagged += [Annotated[refusing, Tag(k)] for k in found.unavailable]
    if not tagged:
        return DetectorConfigBase
    return Annotated[Union[tuple(tagged)], Discriminator(_backend_of)]  # noqa: UP007


if TYPE_CHECKING:
    DetectorConfig = DetectorConfigBase
else:
    DetectorConfig = config_union(_FOUND)


def default_detector() -> DetectorConfigBase:
    backend = BACKENDS.get(DEFAULT)
    if backend is None:
        raise DetectorUnavailableError(
            unavailable_reason(DEFAULT) if DEFAULT in UNAVAILABLE else f"no {DEFAULT!r} plugin"
        )
    return backend.config_class.model_validate({})


def create_detector(config: DetectorConfigBase | None, model_root: Path) -> FaceDetector:
    """The backend ``config.type`` names (YuNet when None)."""
    config = config or default_detector()
    backend = BACKENDS.get(config.type)
    if backend is None:
        if config.type in UNAVAILABLE:
            raise DetectorUnavailableError(unavailable_reason(config.type))
        raise ValueError(f"unknown detector {config.type!r}; known: {', '.join(BACKENDS)}")
    return backend.from_config(config, model_root)
