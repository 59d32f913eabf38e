"""SQL for selector queries, traversal, takeoff and diff.

Selector predicates come from :mod:`bem.query.compile` as SQL text over the aliases ``ve``
(``version_elements``) and ``p`` (``element_payloads``) with bound parameters only.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    TextClause,
    Uuid,
    bindparam,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from bem.query import diff
from bem.versions.models import ElementPayload, VersionElement

ve = VersionElement.__table__.alias("ve")
p = ElementPayload.__table__.alias("p")

SORT_COLUMNS: dict[str, Any] = {
    "global_id": None,
    "name": func.coalesce(p.c.name, ""),
    "ifc_class": p.c.ifc_class,
}


def predicate(sql: str, params: dict[str, Any], version_id: uuid.UUID) -> TextClause:
    binds: list[BindParameter[Any]] = [bindparam(name, value) for name, value in params.items()]
    if ":bem_version" in sql:
        binds.append(bindparam("bem_version", version_id, type_=Uuid()))
    return text(sql).bindparams(*binds)


def elements_of(version_id: uuid.UUID, where: TextClause | None) -> Select[Any]:
    stmt = (
        select(ve.c.global_id, p.c.doc)
        .select_from(ve.join(p, p.c.hash == ve.c.payload_hash))
        .where(ve.c.version_id == version_id)
    )
    return stmt if where is None else stmt.where(where)


async def select_elements(
    session: AsyncSession,
    version_id: uuid.UUID,
    where: TextClause | None,
    sort: str,
    descending: bool,
    after: list[Any] | None,
    limit: int,
) -> list[tuple[Any, ...]]:
    """A keyset page of ``(sort value, global_id, doc)`` rows (sort value is None when
    sorting by GlobalId)."""
    column = SORT_COLUMNS[sort]
    stmt = elements_of(version_id, where)
    keys: list[ColumnElement[Any]] = (
        [ve.c.global_id] if column is None else [column, ve.c.global_id]
    )
    if after is not None:
        position = tuple_(*keys) if len(keys) > 1 else keys[0]
        bound = tuple_(*after) if len(keys) > 1 else after[0]
        stmt = stmt.where(position < bound if descending else position > bound)
    order = [k.desc() if descending else k.asc() for k in keys]
    stmt = stmt.add_columns(column if column is not None else ve.c.global_id)
    rows = await session.execute(stmt.order_by(*order).limit(limit))
    return [(row[2], row[0], row[1]) for row in rows.all()]


async def rows(
    session: AsyncSession, sql: str, params: dict[str, Any], version_id: uuid.UUID
) -> list[Any]:
    result = await session.execute(predicate(sql, params, version_id))
    return list(result.all())


def _diff_params(old: uuid.UUID, new: uuid.UUID) -> list[BindParameter[Any]]:
    return [bindparam("old", old, type_=Uuid()), bindparam("new", new, type_=Uuid())]


async def diff_summary(session: AsyncSession, old: uuid.UUID, new: uuid.UUID) -> dict[str, int]:
    result = await session.execute(text(diff.SUMMARY).bindparams(*_diff_params(old, new)))
    return {str(kind): int(count) for kind, count in result.all()}


async def diff_page(
    session: AsyncSession,
    old: uuid.UUID,
    new: uuid.UUID,
    kind: str | None,
    after: str,
    limit: int,
) -> list[Any]:
    stmt = text(diff.PAGE).bindparams(
        *_diff_params(old, new),
        bindparam("kind", kind, type_=String()),
        bindparam("after", after, type_=String()),
        bindparam("limit", limit, type_=Integer()),
    )
    return list((await session.execute(stmt)).all())


async def payload_docs(session: AsyncSession, hashes: set[str]) -> dict[str, dict[str, Any]]:
    if not hashes:
        return {}
    rows = await session.execute(select(p.c.hash, p.c.doc).where(p.c.hash.in_(hashes)))
    return {h: doc for h, doc in rows.all()}
