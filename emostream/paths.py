"""Where things live on disk: the model repository, caches and the shared data.

Kept in one place so that tests, the CLI and the server agree without passing paths around.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root when running from a checkout (editable install); unused otherwise.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def model_root() -> Path:
    """The model repository: ``EMOSTREAM_MODEL_ROOT`` or the ``models/`` package folder.

    In a checkout that is ``<repo>/models``, so ``make demo`` writes
    ``models/face-emotion/<version>/`` (docs/ARCHITECTURE.md, "Model repository").
    """
    env = os.environ.get("EMOSTREAM_MODEL_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    import emostream.models as pkg

    return Path(pkg.__file__).resolve().parent


def cache_dir() -> Path:
    """Downloads (pinned wheels) and throwaway benchmark environments."""
    env = os.environ.get("EMOSTREAM_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "emostream"
    base.mkdir(parents=True, exist_ok=True)
    return base


def data_root() -> Path | None:
    """The shared real data, or None when this machine has none.

    ``EMOSTREAM_DATA`` wins; otherwise ``../shared/data`` beside the checkout or the
    current directory. Callers skip (tests) or report (CLI) when this is None.
    """
    env = os.environ.get("EMOSTREAM_DATA")
    if env:
        p = Path(env).expanduser()
        return p.resolve() if p.is_dir() else None
    for base in (Path.cwd(), _SOURCE_ROOT):
        p = base.parent / "shared" / "data"
        if p.is_dir():
            return p.resolve()
    return None
