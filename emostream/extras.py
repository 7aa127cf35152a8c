"""Optional packages: the one place that imports them and says which extra brings each.

The core install (``pip install 'emostream[cpu]'`` or ``'[gpu]'``) runs ``serve``,
``worker``, ``analyze`` and ``client`` (file, camera). Everything else is an extra of
pyproject.toml, and a command that needs one calls :func:`require` before it starts work,
so that a lean install answers with the ``pip install`` line instead of a traceback::

    plt = require("matplotlib.pyplot", extra="bench")

The core modules (``emostream/*.py``, ``emostream.broker``, ``emostream.stream``,
``emostream.models``) never import these packages at import time; tests/test_lean_core.py
starts the ingest and the worker with them made unimportable.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> the top-level modules it brings (pyproject.toml [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "convert": ("onnx", "h5py", "tflite", "matplotlib"),
    "bench": ("onnx", "h5py", "tflite", "matplotlib"),
    "dashboards": ("grafana_client", "matplotlib"),
    "mic": ("sounddevice",),
    "train": ("torch", "mlflow", "optuna", "yaml", "opensmile", "sklearn", "scipy"),
}

#: exit status of a command whose extra is not installed (the usage/environment code)
EXIT_MISSING_EXTRA = 2


class MissingExtraError(ImportError):
    """An optional package is not installed; ``str()`` is the message for the user."""

    def __init__(self, modules: list[str], extra: str, causes: list[str]) -> None:
        self.modules = modules
        self.extra = extra
        names = " and ".join([", ".join(modules[:-1]), modules[-1]] if modules[:-1] else modules)
        verb, them = ("is", "it") if len(modules) == 1 else ("are", "them")
        why = f" ({'; '.join(causes)})" if causes else ""
        super().__init__(
            f"this needs {names}, which {verb} not installed{why}; the '{extra}' extra "
            f"brings {them}: pip install 'emostream[{extra}]' "
            f"(from a checkout: pip install -e '.[{extra}]')",
            name=modules[0],
        )


def require(module: str, *more: str, extra: str) -> ModuleType:
    """Import ``module`` (and ``more``) or raise :class:`MissingExtraError` naming ``extra``.

    Returns the first module, so that a lazy import site reads
    ``sd = require("sounddevice", extra="mic")``. Every missing one is named at once.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    loaded: list[ModuleType] = []
    missing: list[str] = []
    causes: list[str] = []
    for name in (module, *more):
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as exc:
            missing.append(name)
            absent = exc.name is not None and (name + ".").startswith(exc.name + ".")
            if not absent:  # installed, but broken: say what broke
                causes.append(f"{name}: {exc}")
    if missing:
        raise MissingExtraError(missing, extra, causes)
    return loaded[0]
