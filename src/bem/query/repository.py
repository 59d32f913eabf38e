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
from bem.versions.models import ElementPayload, Relation, VersionElement

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


async def elements_by_class(
    session: AsyncSession, version_id: uuid.UUID, classes: tuple[str, ...]
) -> list[tuple[str, dict[str, Any]]]:
    stmt = elements_of(version_id, None).where(p.c.ifc_class.in_(classes))
    return [(gid, doc) for gid, doc in (await session.execute(stmt)).all()]


async def contained_counts(session: AsyncSession, version_id: uuid.UUID) -> dict[str, int]:
    stmt = (
        select(Relation.target, func.count())
        .where(Relation.version_id == version_id, Relation.kind == "contained_in")
        .group_by(Relation.target)
    )
    return {target: int(n) for target, n in (await session.execute(stmt)).all()}


async def edges(
    session: AsyncSession,
    version_id: uuid.UUID,
    nodes: set[str],
    kinds: tuple[str, ...] | None,
    outgoing: bool,
) -> list[tuple[str, str, str]]:
    """``(source, kind, target)`` edges leaving (or entering) ``nodes``."""
    near = Relation.source if outgoing else Relation.target
    stmt = select(Relation.source, Relation.kind, Relation.target).where(
        Relation.version_id == version_id, near.in_(nodes)
    )
    if kinds:
        stmt = stmt.where(Relation.kind.in_(kinds))
    return [(s, k, t) for s, k, t in (await session.execute(stmt)).all()]


async def summaries(
    session: AsyncSession, version_id: uuid.UUID, gids: set[str]
) -> dict[str, tuple[str | None, str]]:
    """``global_id -> (name, ifc_class)`` for the elements of ``gids`` in the version."""
    stmt = (
        select(ve.c.global_id, p.c.name, p.c.ifc_class)
        .select_from(ve.join(p, p.c.hash == ve.c.payload_hash))
        .where(ve.c.version_id == version_id, ve.c.global_id.in_(gids))
    )
    return {gid: (name, cls) for gid, name, cls in (await session.execute(stmt)).all()}
