"""What the logs may carry: ids and counts, never a credential.

uvicorn's access log writes each request's full path with its query string, and the
events stream (``?token=``) and the demo page (``/?token=``) take tokens there. The filter
here rewrites every ``token=`` value (also ``access_token=`` and ``session_token=``) to
``***`` before any handler formats the record. ``install`` puts it on uvicorn's loggers;
``logging.config.dictConfig`` (what uvicorn runs at start) replaces handlers, not logger
filters, so installing before or after uvicorn configures its logging both work.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

#: A query parameter (after ``?`` or ``&``): its name, as sent, and its value.
_PARAM = re.compile(r"([?&])([^=&#?\s]+)=([^&#\s\"']*)")
SECRET_NAMES = frozenset({"token", "access_token", "session_token"})
LOGGERS = ("uvicorn.access", "uvicorn.error")


def _hide(m: re.Match[str]) -> str:
    # the name as the server reads it: ?%74oken=... is ?token=... to Starlette
    if unquote_plus(m.group(2)).lower() in SECRET_NAMES:
        return f"{m.group(1)}{m.group(2)}=***"
    return m.group(0)


def redact(text: str) -> str:
    return _PARAM.sub(_hide, text)


class RedactTokens(logging.Filter):
    """Rewrites the message and its string arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def install() -> None:
    """Once per logger, however many apps a process creates."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
