"""Projects and models. Until project roles arrive (identity issue), a user sees the projects
they are a member of (the creator becomes owner) and admins see all; anything else is a 404,
so ids of other projects are not confirmed to exist."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.models import User
from bem.kit.errors import Conflict, NotFound
from bem.kit.pagination import InvalidCursor, decode_cursor, page_of
from bem.projects import repository
from bem.projects.models import Membership, Model, Project
from bem.projects.schemas import ModelCreate, ProjectCreate, ProjectUpdate


async def create_project(session: AsyncSession, user: User, data: ProjectCreate) -> Project:
    project = Project(name=data.name, description=data.description, created_by=user.id)
    session.add(project)
    await session.flush()
    session.add(Membership(project_id=project.id, user_id=user.id, role="owner"))
    await session.commit()
    return project


async def get_project(session: AsyncSession, user: User, project_id: uuid.UUID) -> Project:
    project = await repository.project_for(session, user, project_id)
    if project is None:
        raise NotFound(f"Project {project_id} does not exist or is not visible to you.")
    return project


async def list_projects(
    session: AsyncSession, user: User, cursor: str | None, limit: int
) -> tuple[list[Project], str | None]:
    after = None
    if (values := decode_cursor(cursor, 2)) is not None:
        try:
            after = (datetime.fromisoformat(str(values[0])), uuid.UUID(str(values[1])))
        except ValueError as exc:
            raise InvalidCursor() from exc
    rows = await repository.list_projects(session, user, after, limit + 1)
    return page_of(rows, limit, lambda p: [p.created_at.isoformat(), str(p.id)])


async def update_project(
    session: AsyncSession, user: User, project_id: uuid.UUID, data: ProjectUpdate
) -> Project:
    project = await get_project(session, user, project_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        changes.pop("name")  # a project always has a name; null means "unchanged"
    for key, value in changes.items():
        setattr(project, key, value)
    await session.commit()
    await session.refresh(project)
    return project


async def delete_project(session: AsyncSession, user: User, project_id: uuid.UUID) -> None:
    await get_project(session, user, project_id)
    await repository.delete_project(session, project_id)
    await session.commit()


async def create_model(
    session: AsyncSession, user: User, project_id: uuid.UUID, data: ModelCreate
) -> Model:
    await get_project(session, user, project_id)
    if await repository.model_by_name(session, project_id, data.name) is not None:
        raise Conflict(f"The project already has a model named {data.name!r}.")
    model = Model(project_id=project_id, name=data.name, description=data.description)
    session.add(model)
    await session.commit()
    return model


async def list_models(
    session: AsyncSession, user: User, project_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[Model], str | None]:
    await get_project(session, user, project_id)
    values = decode_cursor(cursor, 1)
    rows = await repository.list_models(
        session, project_id, str(values[0]) if values else None, limit + 1
    )
    return page_of(rows, limit, lambda m: [m.name])


async def get_model(session: AsyncSession, user: User, model_id: uuid.UUID) -> Model:
    model = await repository.model_for(session, user, model_id)
    if model is None:
        raise NotFound(f"Model {model_id} does not exist or is not visible to you.")
    return model
