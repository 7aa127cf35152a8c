"""Read a request body with a hard size limit, then pull the image out of it.

The limit is enforced while streaming (a missing or lying Content-Length cannot get past
it). Multipart bodies are parsed from the bytes already read, so the limit covers them too.
Every body being read also draws on one process-wide budget (``UploadBudget``), so many
slow partial uploads together cannot pin more memory than it allows.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from emostream.stream.errors import ApiError

RAW_TYPES = ("image/", "application/octet-stream")
RETRY_AFTER_S = 1


class UploadBudget:
    """Bytes of request bodies being read right now, across all requests of the process.

    A body reserves its Content-Length before the first byte is read (or, sent chunked,
    each chunk as it comes) and gives it back when reading ends, however it ends. All of
    this runs on the event loop, so plain integers need no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise ApiError(
                503,
                "uploads_busy",
                f"{self.used} bytes of uploads are being received and this server takes "
                f"{self.limit} at once; retry in a moment",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


UNLIMITED = UploadBudget(2**62)  # for an app built without one (none of ours)


def budget_of(request: Request) -> UploadBudget:
    """The app's budget (``app.state.uploads``, set by ``create_app``)."""
    budget = getattr(request.app.state, "uploads", None)
    return budget if isinstance(budget, UploadBudget) else UNLIMITED


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"body is {declared} bytes; the limit is {limit}")
    budget = budget_of(request)
    held = 0
    try:
        if declared is not None and declared.isdigit():
            budget.take(int(declared))
            held = int(declared)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
            if size > held:
                budget.take(size - held)
                held = size
            chunks.append(chunk)
        return b"".join(chunks)
    except ClientDisconnect:  # nobody reads the answer; this only ends the request quietly
        raise ApiError(
            400, "client_disconnected", "the client left before its body arrived"
        ) from None
    finally:
        budget.give(held)


def upload_type(request: Request, raw: tuple[str, ...], send: str) -> str:
    """The body's Content-Type when it is multipart/form-data or one of ``raw``; else 415,
    saying what to ``send`` ("an image as image/*, application/octet-stream")."""
    ctype = request.headers.get("content-type", "").lower()
    if not ctype.startswith(("multipart/form-data", *raw)):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {ctype or '(none)'!r}: send {send} or a multipart/form-data file field",
        )
    return ctype


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image file in a raw (image/*, octet-stream) or multipart/form-data body."""
    ctype = upload_type(request, RAW_TYPES, "an image as image/*, application/octet-stream")
    body = await read_limited(request, limit)
    if not ctype.startswith("multipart/form-data"):
        return body
    if not body:
        raise ApiError(400, "empty_body", "the body is empty; send an image file")

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(
            request.headers, replay(), max_files=4, max_fields=16, max_part_size=limit
        ).parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"multipart body could not be parsed: {exc}") from None
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            await value.close()
            return data
    raise ApiError(
        400, "no_file", "the multipart body has no file part; send one, e.g. curl -F file=@face.jpg"
    )
