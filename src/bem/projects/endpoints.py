from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request, Response, status

from bem.auth.audit import origin_of
from bem.auth.dependencies import allow
from bem.auth.models import Principal, User
from bem.auth.permissions import (
    PROJECT_EDIT,
    PROJECT_MANAGE,
    PROJECT_READ,
    PROJECTS_CREATE,
    PROJECTS_LIST,
)
from bem.kit.db import SessionDep
from bem.kit.errors import problem_responses
from bem.kit.pagination import CursorParam, LimitParam, Page
from bem.projects import service
from bem.projects.access import ModelAccess, ProjectAccess, access_model, access_project
from bem.projects.models import Membership, Model, Project
from bem.projects.schemas import (
    MemberAdd,
    MemberOut,
    MemberSet,
    ModelCreate,
    ModelOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
)

router = APIRouter(prefix="/v1", tags=["projects"], responses=problem_responses(401, 403, 422))
NOT_FOUND = problem_responses(404)
ProjectReader = Annotated[ProjectAccess, access_project(PROJECT_READ)]
ProjectEditor = Annotated[ProjectAccess, access_project(PROJECT_EDIT)]
ProjectOwner = Annotated[ProjectAccess, access_project(PROJECT_MANAGE)]


def _member(membership: Membership, user: User) -> MemberOut:
    return MemberOut(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=membership.role,
        created_at=membership.created_at,
    )


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectOut,
    summary="Create a project (you become its owner)",
)
async def create_project(
    data: ProjectCreate, session: SessionDep, caller: Annotated[Principal, allow(PROJECTS_CREATE)]
) -> Project:
    return await service.create_project(session, caller.user, data)


@router.get("/projects", response_model=Page[ProjectOut], summary="Projects visible to you")
async def list_projects(
    session: SessionDep,
    caller: Annotated[Principal, allow(PROJECTS_LIST)],
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[ProjectOut]:
    rows, next_cursor = await service.list_projects(session, caller, cursor, limit)
    return Page(items=[ProjectOut.model_validate(p) for p in rows], next_cursor=next_cursor)


@router.get(
    "/projects/{project_id}", response_model=ProjectOut, responses=NOT_FOUND, summary="A project"
)
async def get_project(project_id: uuid.UUID, access: ProjectReader) -> Project:
    return access.project


@router.patch(
    "/projects/{project_id}",
    response_model=ProjectOut,
    responses=NOT_FOUND,
    summary="Rename or describe a project",
)
async def update_project(
    project_id: uuid.UUID, data: ProjectUpdate, session: SessionDep, access: ProjectOwner
) -> Project:
    return await service.update_project(session, access.project, data)


@router.delete(
    "/projects/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=NOT_FOUND,
    summary="Delete a project with its models and versions",
)
async def delete_project(
    project_id: uuid.UUID, request: Request, session: SessionDep, access: ProjectOwner
) -> None:
    await service.delete_project(session, origin_of(request), access.principal.user, access.project)


@router.post(
    "/projects/{project_id}/models",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelOut,
    responses=problem_responses(404, 409),
    tags=["models"],
    summary="Create a model in a project",
)
async def create_model(
    project_id: uuid.UUID, data: ModelCreate, session: SessionDep, access: ProjectEditor
) -> Model:
    return await service.create_model(session, access.project, data)


@router.get(
    "/projects/{project_id}/models",
    response_model=Page[ModelOut],
    responses=NOT_FOUND,
    tags=["models"],
    summary="Models of a project",
)
async def list_models(
    project_id: uuid.UUID,
    session: SessionDep,
    _: ProjectReader,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[ModelOut]:
    rows, next_cursor = await service.list_models(session, project_id, cursor, limit)
    return Page(items=[ModelOut.model_validate(m) for m in rows], next_cursor=next_cursor)


@router.get(
    "/models/{model_id}",
    response_model=ModelOut,
    responses=NOT_FOUND,
    tags=["models"],
    summary="A model",
)
async def get_model(
    model_id: uuid.UUID, access: Annotated[ModelAccess, access_model(PROJECT_READ)]
) -> Model:
    return access.model


@router.get(
    "/projects/{project_id}/members",
    response_model=Page[MemberOut],
    responses=NOT_FOUND,
    tags=["members"],
    summary="Members of a project and their roles",
)
async def list_members(
    project_id: uuid.UUID,
    session: SessionDep,
    _: ProjectReader,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[MemberOut]:
    rows, next_cursor = await service.list_members(session, project_id, cursor, limit)
    return Page(items=[_member(m, u) for m, u in rows], next_cursor=next_cursor)


@router.get(
    "/projects/{project_id}/members/{user_id}",
    response_model=MemberOut,
    responses=NOT_FOUND,
    tags=["members"],
    summary="One member's role",
)
async def get_member(
    project_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, _: ProjectReader
) -> MemberOut:
    return _member(*await service.get_member(session, project_id, user_id))


@router.post(
    "/projects/{project_id}/members",
    response_model=MemberOut,
    responses=problem_responses(404, 409),
    tags=["members"],
    summary="Add a member by email, or change their role (owner only)",
)
async def add_member(
    project_id: uuid.UUID,
    data: MemberAdd,
    request: Request,
    session: SessionDep,
    access: ProjectOwner,
) -> MemberOut:
    """The account must exist (an admin invites new people: `POST /v1/admin/users`); 404
    otherwise. The same as `PUT .../members/{user_id}` once the user is found."""
    membership, user = await service.add_member(
        session, origin_of(request), access.principal.user, project_id, data.email, data.role
    )
    return _member(membership, user)


@router.put(
    "/projects/{project_id}/members/{user_id}",
    response_model=MemberOut,
    responses=problem_responses(404, 409),
    tags=["members"],
    summary="Add a member or change their role (owner only)",
)
async def set_member(
    project_id: uuid.UUID,
    user_id: uuid.UUID,
    data: MemberSet,
    request: Request,
    session: SessionDep,
    access: ProjectOwner,
) -> MemberOut:
    membership, user = await service.set_member(
        session, origin_of(request), access.principal.user, project_id, user_id, data.role
    )
    return _member(membership, user)


@router.delete(
    "/projects/{project_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404, 409),
    tags=["members"],
    summary="Remove a member (owner only; the last owner stays)",
)
async def remove_member(
    project_id: uuid.UUID,
    user_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    access: ProjectOwner,
) -> None:
    await service.remove_member(
        session, origin_of(request), access.principal.user, project_id, user_id
    )
