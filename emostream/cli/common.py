"""What the commands share: exit codes, settings built from options, failing with a reason."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from emostream.settings import Settings, describe

if TYPE_CHECKING:
    from emostream.models.face import FaceAnalyzer

EXIT_FAILED_FILES = 1
EXIT_USAGE = 2
EXIT_MODEL_MISSING = 3


class Format(StrEnum):
    text = "text"
    jsonl = "jsonl"


def load_settings(**overrides: Any) -> Settings:
    """Settings from options (tree branches such as ``server={"port": 9000}`` or the flat
    names) over ``EMOSTREAM_*``; a bad value exits 2 saying which and why."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{describe(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise fail(f"invalid settings: {problems}", EXIT_USAGE) from None


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"emostream: {message}", err=True)
    return typer.Exit(code)


def load_face_analyzer(settings: Settings) -> FaceAnalyzer:
    """The production face analyzer; a missing model exits 3 naming what makes it."""
    from emostream.models.face import FaceAnalyzer
    from emostream.models.repository import ModelMissingError

    try:
        return FaceAnalyzer.from_settings(settings)
    except ModelMissingError as exc:
        raise fail(str(exc), EXIT_MODEL_MISSING) from None
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
