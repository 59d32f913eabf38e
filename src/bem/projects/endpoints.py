from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from bem.auth.dependencies import CurrentUser
from bem.kit.db import SessionDep
from bem.kit.errors import problem_responses
from bem.kit.pagination import CursorParam, LimitParam, Page
from bem.projects import service
from bem.projects.models import Model, Project
from bem.projects.schemas import ModelCreate, ModelOut, ProjectCreate, ProjectOut, ProjectUpdate

router = APIRouter(prefix="/v1", tags=["projects"], responses=problem_responses(401, 422))


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectOut,
    summary="Create a project (you become its owner)",
)
async def create_project(data: ProjectCreate, user: CurrentUser, session: SessionDep) -> Project:
    return await service.create_project(session, user, data)


@router.get("/projects", response_model=Page[ProjectOut], summary="Projects visible to you")
async def list_projects(
    user: CurrentUser, session: SessionDep, cursor: CursorParam = None, limit: LimitParam = 100
) -> Page[ProjectOut]:
    rows, next_cursor = await service.list_projects(session, user, cursor, limit)
    return Page(items=[ProjectOut.model_validate(p) for p in rows], next_cursor=next_cursor)


@router.get("/projects/{project_id}", response_model=ProjectOut, responses=problem_responses(404))
async def get_project(project_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Project:
    return await service.get_project(session, user, project_id)


@router.patch("/projects/{project_id}", response_model=ProjectOut, responses=problem_responses(404))
async def update_project(
    project_id: uuid.UUID, data: ProjectUpdate, user: CurrentUser, session: SessionDep
) -> Project:
    return await service.update_project(session, user, project_id, data)


@router.delete(
    "/projects/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404),
    summary="Delete a project with its models and versions",
)
async def delete_project(project_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> None:
    await service.delete_project(session, user, project_id)


@router.post(
    "/projects/{project_id}/models",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelOut,
    responses=problem_responses(404, 409),
    tags=["models"],
)
async def create_model(
    project_id: uuid.UUID, data: ModelCreate, user: CurrentUser, session: SessionDep
) -> Model:
    return await service.create_model(session, user, project_id, data)


@router.get(
    "/projects/{project_id}/models",
    response_model=Page[ModelOut],
    responses=problem_responses(404),
    tags=["models"],
)
async def list_models(
    project_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[ModelOut]:
    rows, next_cursor = await service.list_models(session, user, project_id, cursor, limit)
    return Page(items=[ModelOut.model_validate(m) for m in rows], next_cursor=next_cursor)


@router.get(
    "/models/{model_id}", response_model=ModelOut, responses=problem_responses(404), tags=["models"]
)
async def get_model(model_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Model:
    return await service.get_model(session, user, model_id)
