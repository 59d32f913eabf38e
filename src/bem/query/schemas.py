from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bem.kit.pagination import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT
from bem.query.selector import MAX_QUERY_LENGTH


class QueryIn(BaseModel):
    """The body of ``POST /versions/{id}/query``: the same knobs as the elements list, for
    selectors too long or awkward for a URL."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(max_length=MAX_QUERY_LENGTH, description="An IfcOpenShell selector.")
    fields: str | None = Field(default=None, max_length=2000)
    sort: str = Field(default="global_id", pattern=r"^-?(global_id|name|ifc_class)$")
    cursor: str | None = Field(
        default=None, max_length=MAX_CURSOR_CHARS, pattern=r"^[A-Za-z0-9_-]+$"
    )
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
