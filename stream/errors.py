"""HTTP errors with a JSON body ``{"error": code, "detail": sentence}`` (DESIGN.md)."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    metrics.REQUESTS_REJECTED.labels(endpoint or "other", code).inc()
    body = ErrorBody(error=code, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, request.url.path, exc.headers)


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(
        422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}", request.url.path
    )
