"""Bounded, clean text types for request schemas: no NUL or other control characters
(PostgreSQL rejects NUL in text and JSONB; control characters poison logs and CSV)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StrictStr

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters (including NUL) are not allowed")
    return value


Text = Annotated[StrictStr, Field(max_length=255), AfterValidator(no_control_chars)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=255), AfterValidator(no_control_chars)]
LongText = Annotated[StrictStr, Field(max_length=4000), AfterValidator(no_control_chars)]
