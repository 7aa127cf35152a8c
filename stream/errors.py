"""HTTP errors with a JSON body ``{"error": code, "detail": sentence}`` (docs/ARCHITECTURE.md).

Ours (``ApiError``), FastAPI's request validation, and Starlette's own ``HTTPException``
(404 for an unknown path, 405 for a wrong method, ...) all leave through here, and so does
an unexpected exception (a 500, which the tests and the fuzz suite treat as a bug).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from emostream import metrics
from emostream.schema import ErrorBody


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}  # e.g. Retry-After on a 503


def error_response(
    status: int,
    code: str,
    detail: str,
    endpoint: str = "",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    metrics.REQUESTS_REJECTED.labels(endpoint or "other", code).inc()
    body = ErrorBody(error=code, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def endpoint_label(request: Request) -> str:
    """The matched route's template (``/v1/sessions/{session_id}``), else ``other``.

    Never the raw path: ids and made-up paths would give the metric unbounded labels.
    """
    return str(getattr(request.scope.get("route"), "path", "") or "other")


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, endpoint_label(request), exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals as ``{error, detail}``, keeping their headers (``Allow``)."""
    assert isinstance(exc, HTTPException)
    status = HTTPStatus(exc.status_code)
    if exc.status_code < 200 or exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    code = status.phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if exc.detail != status.phrase else status.description
    target = f"{request.method} {request.url.path}"[:120]
    if exc.status_code == 404:
        detail = f"no such endpoint: {target}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{target}: method not allowed; allowed: {allowed or 'none'}"
    return error_response(
        exc.status_code, code, detail, endpoint_label(request), headers=exc.headers
    )


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    detail = f"{where}: {first.get('msg', 'invalid')}"
    return error_response(422, "invalid_request", detail, endpoint_label(request))


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug of ours still answers ``{error, detail}`` (and is logged with its traceback by
    Starlette, which re-raises it after this response): never a plain-text 500."""
    return error_response(
        500,
        "internal_error",
        "the server failed on this request; it is logged",
        endpoint_label(request),
    )
