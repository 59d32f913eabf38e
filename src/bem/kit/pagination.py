"""Opaque keyset cursors and the page envelope shared by every list endpoint."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel

from bem.kit.errors import Problem

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_CHARS = 512


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


INT64 = (-(2**63), 2**63 - 1)


class InvalidCursor(Problem):
    status, slug = 400, "invalid-cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not valid for this list.", parameter="cursor")


def _sound(value: Any) -> bool:
    """What our own cursors hold: strings without NUL (PostgreSQL text cannot hold one) and
    integers that fit a BIGINT (``bool`` is an ``int`` in Python: refused)."""
    if isinstance(value, str):
        return "\x00" not in value
    return type(value) is int and INT64[0] <= value <= INT64[1]


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    """Decode a cursor made by :func:`encode_cursor`; a tampered one is a 400."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error):  # orjson.JSONDecodeError is a ValueError
        values = None
    if not isinstance(values, list) or len(values) != arity or not all(map(_sound, values)):
        raise InvalidCursor()
    return values


def decode_time_id_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The ``(created_at, id)`` position encoded by :func:`time_id_key`."""
    if (values := decode_cursor(cursor, 2)) is None:
        return None
    try:
        at, row_id = datetime.fromisoformat(str(values[0])), uuid.UUID(str(values[1]))
    except ValueError as exc:
        raise InvalidCursor() from exc
    if at.tzinfo is None:  # ours always carry their zone
        raise InvalidCursor()
    return at, row_id


def time_id_key(row: Any) -> list[Any]:
    return [row.created_at.isoformat(), str(row.id)]


def page_of(
    rows: Sequence[T], limit: int, key: Callable[[T], list[Any]]
) -> tuple[list[T], str | None]:
    """Trim rows fetched with ``limit + 1`` to a page and the cursor of the next one."""
    if len(rows) <= limit:
        return list(rows), None
    page = list(rows[:limit])
    return page, encode_cursor(key(page[-1]))


LimitParam = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, at most {MAX_LIMIT}.")
]
CursorParam = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_CHARS,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Opaque cursor from the previous page's next_cursor.",
    ),
]
