from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bem.kit.errors import PayloadTooLarge, UnsupportedMediaType
from bem.kit.ndjson import MalformedBody, iter_body, iter_json


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def collect(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


def body(parts: tuple[bytes, ...], kind: str = "application/x-ndjson", **limits: int) -> Any:
    defaults = {"max_json_bytes": 10_000, "max_ndjson_bytes": 10_000, "max_line_bytes": 1000}
    return iter_body(chunks(*parts), kind, **{**defaults, **limits})


async def test_lines_split_across_chunks_and_blank_lines() -> None:
    items = await collect(body((b'{"a":', b'1}\n\n{"b"', b":2}\r\n", b'{"c":3}')))
    assert items == [("line 1", {"a": 1}), ("line 3", {"b": 2}), ("line 4", {"c": 3})]


async def test_content_type_parameters_are_ignored() -> None:
    items = await collect(body((b'[{"a":1}]',), kind="application/json; charset=utf-8"))
    assert items == [("element 0", {"a": 1})]


async def test_limits_fail_early() -> None:
    with pytest.raises(PayloadTooLarge):
        await collect(body((b"{}\n" * 10, b"x" * 5000), max_ndjson_bytes=1024))
    with pytest.raises(PayloadTooLarge, match="line 2"):
        await collect(body((b"{}\n", b"x" * 2000), max_line_bytes=1000))
    with pytest.raises(PayloadTooLarge):
        await collect(body((b"[" + b"{}," * 5000,), kind="application/json", max_json_bytes=1024))


async def test_malformed_input_names_the_line() -> None:
    with pytest.raises(MalformedBody, match="line 2"):
        await collect(body((b"{}\n{oops}\n",)))
    with pytest.raises(MalformedBody, match="line 1: expected a JSON object"):
        await collect(body((b"[]\n",)))
    with pytest.raises(UnsupportedMediaType):
        await collect(body((b"{}",), kind="text/csv"))


def test_json_accepts_array_or_envelope_only() -> None:
    assert list(iter_json(b'{"elements": [{"a": 1}]}')) == [("element 0", {"a": 1})]
    for bad in (b'{"elements": [], "x": 1}', b"5", b"[1]", b"{"):
        with pytest.raises(MalformedBody):
            list(iter_json(bad))


async def test_a_line_finished_in_the_chunk_that_overshoots_is_refused() -> None:
    """900 bytes, then a chunk that ends the line at 1,400: only the unfinished tail was
    measured, so the finished line slipped past the 1,000-byte limit."""
    line = b'{"a": "' + b"x" * 1390 + b'"}'
    with pytest.raises(PayloadTooLarge, match="line 2 exceeds 1000 bytes"):
        await collect(body((b"{}\n" + line[:900], line[900:] + b"\n{}\n")))
    items = await collect(body((b"{}\n" + b'{"a": "' + b"x" * 980 + b'"}\n',)))
    assert len(items) == 2  # up to the limit is fine
