"""Property-based tests (hypothesis) of the two places where client text becomes database
input: the cursor decoder and the selector compiler's literals. Whatever a client sends is
either refused as a 400 or runs on the real database; it never reaches it as something the
database refuses (an integer past int64, a NUL, a boolean where a number belongs)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bem.kit.db import create_engine
from bem.kit.pagination import INT64, InvalidCursor, decode_cursor, encode_cursor
from bem.query import repository
from bem.query.compile import Compiler, compile_selector
from bem.query.selector import SelectorError, parse
from tests.conftest import settings_for

EXAMPLES = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def raw_cursor(values: Any) -> str:
    """A cursor as a client could forge it (``json`` writes integers of any size)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def sound(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    return type(value) is int and INT64[0] <= value <= INT64[1]


@EXAMPLES
@given(values=JSON, arity=st.integers(min_value=1, max_value=2))
def test_a_decoded_cursor_holds_only_what_the_database_takes(values: Any, arity: int) -> None:
    try:
        decoded = decode_cursor(raw_cursor(values), arity)
    except InvalidCursor:
        return
    assert decoded is not None and len(decoded) == arity and all(map(sound, decoded))


@EXAMPLES
@given(text=st.text(max_size=80))
def test_any_cursor_text_is_decoded_or_refused(text: str) -> None:
    try:
        decoded = decode_cursor(text, 1)
    except InvalidCursor:
        return
    assert decoded is not None and all(map(sound, decoded))


@EXAMPLES
@given(values=st.lists(st.text(max_size=20) | st.integers(*INT64), min_size=1, max_size=2))
def test_our_own_cursors_round_trip(values: list[Any]) -> None:
    values = [v.replace("\x00", "") if isinstance(v, str) else v for v in values]
    assert decode_cursor(encode_cursor(values), len(values)) == values


def quoted(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


LITERALS = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.text(max_size=30).map(quoted),
    st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True),
)
FACETS = ["Name{op}{v}", "Pset_WallCommon.FireRating{op}{v}", "/Qto_.*/.NetVolume{op}{v}"]


@pytest.fixture
def executor(database_url: str) -> Any:
    """Runs a compiled selector against the test database through the app's own engine."""
    runner = asyncio.Runner()
    engine = create_engine(settings_for(database_url))
    version = uuid.uuid4()

    def execute(sql: str, params: dict[str, Any]) -> None:
        async def go() -> None:
            async with engine.connect() as conn:
                where = repository.predicate(sql, params, version)
                await conn.execute(repository.elements_of(version, where).limit(1))

        runner.run(go())

    yield engine.dialect.name, execute
    runner.run(engine.dispose())
    runner.close()


@EXAMPLES
@given(literal=LITERALS, facet=st.sampled_from(FACETS), op=st.sampled_from(["=", ">", "<=", "*="]))
def test_any_selector_literal_runs_or_is_refused(
    executor: Any, literal: str, facet: str, op: str
) -> None:
    dialect, execute = executor
    try:
        selector = parse(f"IfcWall, {facet.format(op=op, v=literal)}")
    except SelectorError:
        return  # a 400 naming the position
    compiler = Compiler(dialect=dialect)
    sql = compile_selector(selector, compiler)
    for value in compiler.params.values():
        if isinstance(value, int):
            assert INT64[0] <= value <= INT64[1], value
    execute(sql, compiler.params)
