"""Selector queries over a version: parse, compile, page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from bem.auth.models import User
from bem.kit.cache import lookup
from bem.kit.errors import Problem
from bem.kit.pagination import InvalidCursor, decode_cursor, page_of
from bem.kit.state import AppState
from bem.query import diff as diffs
from bem.query import repository
from bem.query import takeoff as takeoffs
from bem.query.compile import Compiler, UnsupportedFacet, compile_selector
from bem.query.schemas import ElementQuery, TakeoffQuery
from bem.query.selector import SelectorError, parse
from bem.versions.classes import schema_of
from bem.versions.facts import renumbered
from bem.versions.models import Version
from bem.versions.schemas import ELEMENT_FIELDS

SORTS = ("global_id", "name", "ifc_class")

SUBFIELD_PARENTS = ("properties", "quantities")


def parse_fields(fields: str | None) -> tuple[str, ...] | None:
    """``fields=name,ifc_class,properties.Pset_WallCommon`` -> validated selectors."""
    if fields is None:
        return None
    chosen = tuple(dict.fromkeys(f.strip() for f in fields.split(",") if f.strip()))
    for item in chosen:
        top, _, sub = item.partition(".")
        if top not in ELEMENT_FIELDS or (sub and top not in SUBFIELD_PARENTS):
            raise Problem(
                f"Unknown field {item!r}; choose from {', '.join(ELEMENT_FIELDS)} "
                "or properties.<Pset>/quantities.<Qto>.",
                slug="invalid-fields",
            )
    return chosen


def shape_element(gid: str, doc: dict[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    if fields is None:
        return {"global_id": gid, **doc}
    out: dict[str, Any] = {"global_id": gid}
    for item in fields:
        top, _, sub = item.partition(".")
        if top == "global_id":
            continue
        if not sub:
            out[top] = doc.get(top)
        elif sub in doc.get(top, {}):
            out.setdefault(top, {})[sub] = doc[top][sub]
        else:
            out.setdefault(top, {})
    return out


class InvalidSelector(Problem):
    status, slug = 400, "invalid-selector"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, parameter="q", **extra)


def compiler_for(session: AsyncSession, version: Version) -> Compiler:
    return Compiler(
        dialect=session.get_bind().dialect.name, schema=schema_of(version.source_schema)
    )


def compile_q(compiler: Compiler, q: str | None) -> str | None:
    """The selector as SQL (parameters land in ``compiler``), or None for "every element"."""
    if q is None or not q.strip():
        return None
    try:
        return compile_selector(parse(q), compiler)
    except SelectorError as exc:
        raise InvalidSelector(
            f"Selector error at position {exc.position}: {exc.message}.",
            position=exc.position,
            selector=q,
        ) from exc
    except UnsupportedFacet as exc:
        raise InvalidSelector(f"{exc}.", selector=q) from exc


def where_clause(session: AsyncSession, version: Version, q: str | None) -> TextClause | None:
    compiler = compiler_for(session, version)
    sql = compile_q(compiler, q)
    return None if sql is None else repository.predicate(sql, compiler.params, version.id)


def parse_sort(sort: str) -> tuple[str, bool]:
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    if key not in SORTS:
        raise Problem(
            f"Unknown sort {sort!r}; choose from {', '.join(SORTS)} (prefix - for descending).",
            slug="invalid-sort",
        )
    return key, descending


async def run(session: AsyncSession, statement: Any) -> Any:
    """Execute a selector statement; a pattern the database's regex engine refuses is a 400."""
    try:
        return await statement
    except DBAPIError as exc:
        if "regular expression" in str(exc.orig).lower():
            await session.rollback()
            raise InvalidSelector(
                "The database cannot evaluate this regular expression (PostgreSQL uses POSIX "
                "regular expressions)."
            ) from exc
        raise


async def query_page(
    session: AsyncSession, version: Version, query: ElementQuery
) -> dict[str, Any]:
    q, sort, cursor, limit, fields = query.q, query.sort, query.cursor, query.limit, query.fields
    key, descending = parse_sort(sort)
    arity = 1 if key == "global_id" else 2
    after = decode_cursor(cursor, arity)
    if after is not None and not all(isinstance(v, str) for v in after):
        raise InvalidCursor()
    where = where_clause(session, version, q)
    rows = await run(
        session,
        repository.select_elements(session, version.id, where, key, descending, after, limit + 1),
    )
    page, next_cursor = page_of(
        rows, limit, lambda row: [row[1]] if arity == 1 else [row[0], row[1]]
    )
    return {
        "items": [shape_element(gid, doc, fields) for _, gid, doc in page],
        "next_cursor": next_cursor,
    }


async def takeoff(session: AsyncSession, version: Version, query: TakeoffQuery) -> dict[str, Any]:
    keys = takeoffs.parse_group_by(query.group_by)
    wanted = takeoffs.parse_measures(query.measures)
    compiler = compiler_for(session, version)
    where = compile_q(compiler, query.q)
    sql = takeoffs.statement(compiler, keys, wanted, where)
    rows = await run(session, repository.rows(session, sql, compiler.params, version.id))
    return {"version_id": str(version.id), **takeoffs.table(keys, wanted, rows)}


def diff_position(cursor: str | None) -> str:
    """The GlobalId a diff page starts after."""
    values = decode_cursor(cursor, 1)
    return str(values[0]) if values else ""


EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


async def takeoff_file(
    state: AppState,
    user: User,
    format: str,
    key: str,
    compute: Callable[[], Awaitable[dict[str, Any]]],
) -> bytes:
    """A takeoff as a CSV or XLSX file; at most ``BEM_MAX_CONCURRENT_EXPORTS`` per user are
    made at once (a spreadsheet of a large takeoff is work)."""
    slot = (
        state.concurrency.slot(f"export:{user.id}", state.settings.max_concurrent_exports)
        if state.concurrency is not None
        else nullcontext()
    )
    async with slot:
        result = orjson.loads(await lookup(state.cache, key, compute))
        return takeoffs.to_csv(result) if format == "csv" else takeoffs.to_xlsx(result)


async def diff_summary(session: AsyncSession, old: Version, new: Version) -> dict[str, int]:
    """How many elements of each kind changed from ``old`` to ``new``, and how many did not.
    The same for every page of the diff: the endpoint caches it on its own (at 100k elements
    it is half of an uncached page's time)."""
    summary = await repository.diff_summary(session, old.id, new.id)
    counts = {k: summary.get(k, 0) for k in diffs.KINDS}
    counts["unchanged"] = (
        old.element_count - counts["removed"] - counts["changed"] - counts["re_identified"]
    )
    return counts


async def diff_versions(
    session: AsyncSession,
    old: Version,
    new: Version,
    counts: dict[str, int],
    kind: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """One page of the changes from ``old`` to ``new`` (two versions of one model:
    ``get_sibling``), with their ``counts`` (``diff_summary``)."""
    after = diff_position(cursor)
    rows = await repository.diff_page(session, old.id, new.id, kind, after, limit + 1)
    page, next_cursor = page_of(rows, limit, lambda row: [row.gid])
    docs = await repository.payload_docs(
        session, {h for row in page for h in (row.old_hash, row.new_hash) if h}
    )
    items = []
    for row in page:
        item: dict[str, Any] = {"kind": row.kind, "global_id": row.gid}
        if row.kind == "re_identified":
            item["new_global_id"] = row.new_gid
            old_view, new_view = renumbered(docs[row.old_hash]), renumbered(docs[row.new_hash])
            item["match"] = diffs.match(row.how, old_view, new_view)
            if row.how in ("place", "name"):  # found again, and edited
                changes = diffs.field_changes(old_view, new_view)
                item["areas"] = diffs.areas(changes)
                item["changes"] = changes
        if row.kind == "changed":
            changes = diffs.field_changes(docs[row.old_hash], docs[row.new_hash])
            item["areas"] = diffs.areas(changes)
            item["changes"] = changes
        doc = docs[row.new_hash or row.old_hash]
        item["name"], item["ifc_class"] = doc.get("name"), doc.get("ifc_class")
        items.append(item)
    return {
        "old_version_id": str(old.id),
        "new_version_id": str(new.id),
        "summary": counts,
        "items": items,
        "next_cursor": next_cursor,
    }
