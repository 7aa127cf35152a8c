"""``json.loads`` for untrusted input: nesting is bounded before the parser sees it, and
every string it returns is text.

The standard parser recurses once per ``[`` or ``{``: a 2 kB body nested 1,000 deep ends
in ``RecursionError``, which is no ``ValueError`` and so escapes the usual "bad JSON"
handling. :func:`loads` counts the depth first (brackets outside strings, one linear scan)
and refuses anything deeper than ``max_depth`` with a ``ValueError`` that says so.

It also reads ``"\\udcff"``, a lone surrogate, into a str that cannot be encoded again:
kept (a Twilio custom parameter, an AudioHook participant), it broke every JSON answer
that named it. :func:`loads` refuses one with a ``ValueError`` too (a pair, as an emoji is
escaped, is text).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deeper than any document this project reads (an offer is 1 level, job metadata 2 or 3).
MAX_DEPTH = 32
#: A bracket, or a whole string (to its closing quote, or to the end when unterminated, so
#: the scan never backtracks: ``"\\"\\"\\"...`` is linear, not quadratic).
_TOKEN = re.compile(r'[\[\]{}]|"(?:[^"\\]|\\.)*"?', re.DOTALL)
#: An escape of ``U+D800``-``U+DFFF`` (or what looks so after an escaped backslash: the
#: parsed value is then checked and found clean)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class TooDeepError(ValueError):
    """The document nests arrays/objects deeper than allowed."""


def depth(text: str, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``text`` (strings do not count).

    With ``stop_above``, returns as soon as the depth passes it.
    """
    deepest = level = 0
    for m in _TOKEN.finditer(text):
        token = m[0]
        if token in "[{":
            level += 1
            deepest = max(deepest, level)
            if stop_above is not None and deepest > stop_above:
                break
        elif token in "]}":
            level -= 1
    return deepest


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON; raises ``ValueError`` (``TooDeepError`` when nested too deep), also
    for a string holding a lone surrogate."""
    text = data.decode(json.detect_encoding(data)) if isinstance(data, bytes) else data
    openers = text.count("[") + text.count("{")  # C-fast: most messages end the check here
    if openers > max_depth and depth(text, stop_above=max_depth) > max_depth:
        raise TooDeepError(f"JSON nested more than {max_depth} levels deep")
    value = json.loads(text)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):  # C-fast; a surrogate escape is rare
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError("a \\u escape of a lone surrogate is no text") from None
    return value
