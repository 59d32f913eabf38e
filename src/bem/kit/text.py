"""Bounded, clean text types for request schemas: no NUL or other control characters
(PostgreSQL rejects NUL in text and JSONB; control characters poison logs and CSV).

The rule is a regex ``pattern``, so the OpenAPI document states it too."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, StrictStr

NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def no_control_chars(value: str) -> str:
    """For values validated outside a schema field (property values inside documents)."""
    if _CONTROL.search(value):
        raise ValueError("control characters (including NUL) are not allowed")
    return value


def has_control_chars(value: str) -> bool:
    """Any C0 control character or DEL, line breaks included (for names that end up in logs
    and headers, such as file names)."""
    return any(ord(c) < 0x20 or c == "\x7f" for c in value)


Text = Annotated[StrictStr, Field(max_length=255, pattern=NO_CONTROL)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=NO_CONTROL)]
LongText = Annotated[StrictStr, Field(max_length=4000, pattern=NO_CONTROL)]


def nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


# Names that identify something (a model within its project): one spelling per name.
KeyName = Annotated[Name, AfterValidator(nfc)]
