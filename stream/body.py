"""Read a request body with a hard size limit, then pull the image out of it.

The limit is enforced while streaming (a missing or lying Content-Length cannot get past
it). Multipart bodies are parsed from the bytes already read, so the limit covers them too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from emostream.stream.errors import ApiError

RAW_TYPES = ("image/", "application/octet-stream")


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image file in a raw (image/*, octet-stream) or multipart/form-data body."""
    ctype = request.headers.get("content-type", "").lower()
    if not ctype.startswith(("multipart/form-data", *RAW_TYPES)):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {ctype or '(none)'!r}: send an image as image/*, "
            "application/octet-stream or a multipart/form-data file field",
        )
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
