from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.models import User
from bem.projects.models import Membership, Model, Project

T = TypeVar("T")


async def list_projects(
    session: AsyncSession,
    member: uuid.UUID | None,
    only: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Project]:
    """Projects ``member`` belongs to (all when None), optionally just project ``only``."""
    conditions: list[ColumnElement[bool]] = []
    if member is not None:
        mine = select(Membership.project_id).where(Membership.user_id == member)
        conditions.append(Project.id.in_(mine))
    if only is not None:
        conditions.append(Project.id == only)
    if after is not None:
        created, pid = after
        conditions.append(
            or_(Project.created_at > created, and_(Project.created_at == created, Project.id > pid))
        )
    stmt = select(Project).where(*conditions).order_by(Project.created_at, Project.id).limit(limit)
    return list(await session.scalars(stmt))


async def delete_project(session: AsyncSession, project_id: uuid.UUID) -> None:
    await session.execute(delete(Project).where(Project.id == project_id))


async def model_by_name(session: AsyncSession, project_id: uuid.UUID, name: str) -> Model | None:
    result: Model | None = await session.scalar(
        select(Model).where(Model.project_id == project_id, Model.name == name)
    )
    return result


async def list_models(
    session: AsyncSession, project_id: uuid.UUID, after: str | None, limit: int
) -> list[Model]:
    stmt = select(Model).where(Model.project_id == project_id)
    if after is not None:
        stmt = stmt.where(Model.name > after)
    return list(await session.scalars(stmt.order_by(Model.name).limit(limit)))


async def members(
    session: AsyncSession, project_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[tuple[Membership, User]]:
    stmt = (
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.project_id == project_id)
    )
    if after is not None:
        stmt = stmt.where(Membership.user_id > after)
    rows = await session.execute(stmt.order_by(Membership.user_id).limit(limit))
    return [(m, u) for m, u in rows.all()]


async def membership(
    session: AsyncSession, project_id: uuid.UUID, user_id: uuid.UUID
) -> Membership | None:
    result: Membership | None = await session.get(Membership, (project_id, user_id))
    return result


async def lock_project(session: AsyncSession, project_id: uuid.UUID) -> None:
    """Serialize membership changes of one project until this transaction ends (a row lock
    on PostgreSQL; SQLite has one writer). Two owners demoting each other at once both
    counted two owners and both went ahead, leaving none."""
    await session.execute(select(Project.id).where(Project.id == project_id).with_for_update())


async def owner_count(session: AsyncSession, project_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.project_id == project_id, Membership.role == "owner")
    )
    return int(count or 0)


def _role_of(user_id: uuid.UUID, project_id: Any) -> Any:
    """The user's role in a project, as a scalar subquery (NULL when not a member)."""
    return (
        select(Membership.role)
        .where(Membership.project_id == project_id, Membership.user_id == user_id)
        .scalar_subquery()
    )


async def project_with_role(
    session: AsyncSession, project_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Project, str | None] | None:
    """A project and the user's role in it, in one statement."""
    row = (
        await session.execute(
            select(Project, _role_of(user_id, Project.id)).where(Project.id == project_id)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def model_with_role(
    session: AsyncSession, model_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Model, str | None] | None:
    """A model and the user's role in its project, in one statement."""
    row = (
        await session.execute(
            select(Model, _role_of(user_id, Model.project_id)).where(Model.id == model_id)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def in_model_with_role(
    session: AsyncSession, kind: type[T], object_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[T, uuid.UUID, str | None] | None:
    """A row of a table that belongs to a model (``kind.model_id``: a version, a job), its
    project and the user's role there, in one statement."""
    table = cast(Any, kind)
    row = (
        await session.execute(
            select(table, Model.project_id, _role_of(user_id, Model.project_id))
            .join(Model, Model.id == table.model_id)
            .where(table.id == object_id)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def project_of_model(session: AsyncSession, model_id: uuid.UUID) -> uuid.UUID | None:
    result: uuid.UUID | None = await session.scalar(
        select(Model.project_id).where(Model.id == model_id)
    )
    return result


async def projects_named(session: AsyncSession, name: str) -> list[Project]:
    rows = await session.scalars(select(Project).where(Project.name == name).limit(10))
    return list(rows)
