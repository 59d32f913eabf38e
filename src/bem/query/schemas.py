from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bem.kit.pagination import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT
from bem.query.selector import MAX_QUERY_LENGTH

# A request line must fit the HTTP parser's 64 KiB (uvicorn with httptools answers a longer
# one with a text/plain 400 the app never sees), even when every character is a 4-byte UTF-8
# one, percent-encoded (12 bytes): q (4000) plus these stay under it
# (tests/unit/test_openapi.py checks every GET).
MAX_FIELDS_CHARS = 1000
MAX_GROUP_BY_CHARS = 300
MAX_MEASURES_CHARS = 1000


class QueryIn(BaseModel):
    """The body of ``POST /versions/{id}/query``: the same knobs as the elements list, for
    selectors too long or awkward for a URL."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(max_length=MAX_QUERY_LENGTH, description="An IfcOpenShell selector.")
    fields: str | None = Field(default=None, max_length=MAX_FIELDS_CHARS)
    sort: str = Field(default="global_id", pattern=r"^-?(global_id|name|ifc_class)$")
    cursor: str | None = Field(
        default=None, max_length=MAX_CURSOR_CHARS, pattern=r"^[A-Za-z0-9_-]+$"
    )
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


@dataclass(frozen=True)
class ElementQuery:
    """A page of elements: a selector, an order, a position and the parts to return (from
    the list's query string, or the body of ``POST .../query``)."""

    q: str | None
    sort: str
    cursor: str | None
    limit: int
    fields: tuple[str, ...] | None

    def key(self) -> tuple[object, ...]:
        """What a cached page depends on."""
        return self.q, self.sort, self.cursor, self.limit, self.fields


@dataclass(frozen=True)
class TakeoffQuery:
    q: str | None
    group_by: str | None
    measures: str | None
    format: Literal["json", "csv", "xlsx"]
