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
    """``value`` (parsed JSON) in canonical form. Dispatched on the exact type: an upload's
    documents hold ~40 values each, and chained ``isinstance`` checks made this the largest
    cost of building a batch (bench/ingest.py)."""
    kind = type(value)
    return value if kind in _LEAVES else _NORMALIZE[kind](value)


def _float(value: float) -> float | int:
    return int(value) if value.is_integer() and abs(value) < _MAX_SAFE_INT else value


def _dict(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v if type(v) in _LEAVES else _NORMALIZE[type(v)](v) for k, v in value.items()}


def _list(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [v if type(v) in _LEAVES else _NORMALIZE[type(v)](v) for v in value]


_LEAVES = frozenset({str, int, bool, type(None)})
_NORMALIZE: dict[type, Any] = {float: _float, dict: _dict, list: _list, tuple: _list}


def canonical_json(doc: Any) -> bytes:
    """``doc`` must already be normalized (see :func:`normalize`)."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def content_hash(doc: Any) -> str:
    return hashlib.sha256(canonical_json(doc)).hexdigest()
