"""Element documents from JSON and NDJSON request bodies, read as a stream with limits.

Both readers yield ``(where, raw_document)`` pairs, ``where`` naming the position for error
messages: ``"line 7"`` for NDJSON, ``"element 6"`` (array index) for JSON. Validation of
each document happens downstream, in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import orjson

from bem.kit.errors import PayloadTooLarge, Problem, UnsupportedMediaType

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
JSON_TYPES = ("application/json",)


class MalformedBody(Problem):
    status, slug = 400, "malformed-body"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body exceeds the limit of {limit} bytes.", limit=limit)


async def read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Read a whole body, failing as soon as it passes ``limit`` (not after reading it all)."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise _too_large(limit)
    return bytes(buf)


def _parse_line(line: bytes, line_no: int) -> dict[str, Any]:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"line {line_no}: invalid JSON ({exc.msg})", line=line_no) from exc
    if not isinstance(doc, dict):
        raise MalformedBody(f"line {line_no}: expected a JSON object", line=line_no)
    return doc


async def iter_ndjson(
    chunks: AsyncIterator[bytes], *, max_bytes: int, max_line_bytes: int
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """One JSON object per line; blank lines are skipped; a line may not exceed the limit
    (finished lines are checked too: one can end in the chunk that overshot the limit)."""
    total = 0
    pending = b""
    line_no = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(max_bytes)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for number, line in enumerate([*lines, pending], start=line_no + 1):
            if len(line) > max_line_bytes:
                raise PayloadTooLarge(
                    f"line {number} exceeds {max_line_bytes} bytes", limit=max_line_bytes
                )
        for line in lines:
            line_no += 1
            if line.strip():
                yield f"line {line_no}", _parse_line(line, line_no)
    if pending.strip():
        yield f"line {line_no + 1}", _parse_line(pending, line_no + 1)


def iter_json(body: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """A JSON array of elements, or ``{"elements": [...]}``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"invalid JSON ({exc.msg})") from exc
    if isinstance(data, dict) and set(data) == {"elements"}:
        data = data["elements"]
    if not isinstance(data, list):
        raise MalformedBody('expected a JSON array of elements or {"elements": [...]}')
    for index, doc in enumerate(data):
        if not isinstance(doc, dict):
            raise MalformedBody(f"element {index}: expected a JSON object", index=index)
        yield f"element {index}", doc


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


async def iter_body(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    *,
    max_json_bytes: int,
    max_ndjson_bytes: int,
    max_line_bytes: int,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Element documents from a request body, by its ``Content-Type``."""
    kind = media_type(content_type)
    if kind in NDJSON_TYPES:
        async for item in iter_ndjson(
            chunks, max_bytes=max_ndjson_bytes, max_line_bytes=max_line_bytes
        ):
            yield item
    elif kind in JSON_TYPES:
        for item in iter_json(await read_bounded(chunks, max_json_bytes)):
            yield item
    else:
        raise UnsupportedMediaType(
            "Send elements as application/json (an array) or application/x-ndjson "
            "(one element per line).",
            accepted=[*JSON_TYPES, *NDJSON_TYPES],
        )


def iter_ndjson_file(
    file: IO[bytes], *, max_line_bytes: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The same as :func:`iter_ndjson`, over a stored file (imports)."""
    line_no = 0
    while line := file.readline(max_line_bytes + 1):
        line_no += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            raise PayloadTooLarge(
                f"line {line_no} exceeds {max_line_bytes} bytes", limit=max_line_bytes
            )
        if line.strip():
            yield f"line {line_no}", _parse_line(line, line_no)
