from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.models import User
from bem.projects.models import Membership, Model, Project


def _visible_to(user: User) -> list[ColumnElement[bool]]:
    if user.is_admin:
        return []
    member = select(Membership.project_id).where(Membership.user_id == user.id)
    return [Project.id.in_(member)]


async def project_for(session: AsyncSession, user: User, project_id: uuid.UUID) -> Project | None:
    stmt = select(Project).where(Project.id == project_id, *_visible_to(user))
    result: Project | None = await session.scalar(stmt)
    return result


async def list_projects(
    session: AsyncSession, user: User, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Project]:
    stmt = select(Project).where(*_visible_to(user))
    if after is not None:
        created, pid = after
        stmt = stmt.where(
            or_(Project.created_at > created, and_(Project.created_at == created, Project.id > pid))
        )
    stmt = stmt.order_by(Project.created_at, Project.id).limit(limit)
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


async def model_for(session: AsyncSession, user: User, model_id: uuid.UUID) -> Model | None:
    stmt = (
        select(Model)
        .join(Project, Project.id == Model.project_id)
        .where(Model.id == model_id, *_visible_to(user))
    )
    result: Model | None = await session.scalar(stmt)
    return result
