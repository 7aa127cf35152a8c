"""Field types shared by the component configs, written so environment variables read well.

``EMOSTREAM_SERVER__API_TOKENS=a,b`` (or the older ``EMOSTREAM_API_TOKENS=a,b``) is a list
of two tokens, not JSON; an empty value or ``none`` unsets an optional bound.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import NoDecode


def _split_commas(v: object) -> object:
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


def _split_or_none(v: object) -> object:
    v = _split_commas(v)
    return v or None if isinstance(v, list) else v


def _none_words(v: object) -> object:
    if isinstance(v, str) and v.strip().lower() in ("", "none"):
        return None
    return v


#: ``a,b,c`` -> ``["a", "b", "c"]``; empty -> ``[]``.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
#: ``a,b`` -> ``["a", "b"]``; empty -> None (let the component choose).
OptionalCommaList = Annotated[list[str] | None, NoDecode, BeforeValidator(_split_or_none)]
#: ``""`` or ``none`` -> None.
Unset = BeforeValidator(_none_words)
