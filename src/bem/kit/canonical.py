"""Canonical JSON and content hashes: the identity of a stored element payload.

Canonical form: keys sorted, no insignificant whitespace, integral floats written as
integers (``5.0`` -> ``5``), ``-0.0`` as ``0``. Equal documents hash equal however they were
produced (IFC, DXF or NDJSON, any JSON library).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

_MAX_SAFE_INT = 2**53


def normalize(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _MAX_SAFE_INT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


def canonical_json(doc: Any) -> bytes:
    """``doc`` must already be normalized (see :func:`normalize`)."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def content_hash(doc: Any) -> str:
    return hashlib.sha256(canonical_json(doc)).hexdigest()
