"""Projects, models and project membership. Who may call what is decided before these run
(``auth/dependencies.allow``); these enforce the business rules."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth import audit
from bem.auth import service as auth
from bem.auth.audit import Origin
from bem.auth.models import Principal, User
from bem.auth.permissions import Permission, Role
from bem.events import service as events
from bem.kit.errors import Conflict, Forbidden, NotFound
from bem.kit.memo import forget_after_commit
from bem.kit.pagination import (
    InvalidCursor,
    decode_cursor,
    decode_time_id_cursor,
    page_of,
    time_id_key,
)
from bem.projects import repository
from bem.projects.models import Membership, Model, Project
from bem.projects.schemas import ModelCreate, ProjectCreate, ProjectUpdate

HIDDEN = "The resource does not exist or is not visible to you."


def project_role(
    principal: Principal, permission: Permission, project_id: uuid.UUID | None, member: str | None
) -> Role:
    """The caller's role in the project an object belongs to (``project_id`` None: there is
    no such object), if it allows ``permission``. Not a member, or a token bound to another
    project: 404, exactly like a missing object. Too low a role: 403. Server admins act as
    owners."""
    if project_id is None or principal.project_id not in (None, project_id):
        raise NotFound(HIDDEN)
    role = Role.owner if principal.user.is_admin else Role[member] if member else None
    if role is None:
        raise NotFound(HIDDEN)
    assert permission.role is not None
    if role < permission.role:
        raise Forbidden(f"This needs the {permission.role.name} role in the project.")
    return role


async def visible_to(session: AsyncSession, user: User, project_id: uuid.UUID) -> bool:
    """Whether ``user`` may see the project at all (a member, or an admin)."""
    found = await repository.project_with_role(session, project_id, user.id)
    return found is not None and (user.is_admin or found[1] is not None)


async def create_project(session: AsyncSession, user: User, data: ProjectCreate) -> Project:
    project = Project(name=data.name, description=data.description, created_by=user.id)
    session.add(project)
    await session.flush()
    session.add(Membership(project_id=project.id, user_id=user.id, role="owner"))
    await session.flush()
    return project


async def get_project(session: AsyncSession, project_id: uuid.UUID) -> Project:
    project = await session.get(Project, project_id)
    if project is None:
        raise NotFound(f"Project {project_id} does not exist.")
    return project


async def list_projects(
    session: AsyncSession, principal: Principal, cursor: str | None, limit: int
) -> tuple[list[Project], str | None]:
    after = decode_time_id_cursor(cursor)
    member = None if principal.user.is_admin else principal.user.id
    rows = await repository.list_projects(session, member, principal.project_id, after, limit + 1)
    return page_of(rows, limit, time_id_key)


async def update_project(session: AsyncSession, project: Project, data: ProjectUpdate) -> Project:
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        changes.pop("name")  # a project always has a name; null means "unchanged"
    for key, value in changes.items():
        setattr(project, key, value)
    await session.flush()
    await session.refresh(project)  # the new updated_at
    return project


async def delete_project(
    session: AsyncSession, origin: Origin, actor: User, project: Project
) -> None:
    project_id = project.id
    await repository.delete_project(session, project_id)
    forget_after_commit(session, f"project:{project_id}")
    audit.record(
        session,
        origin,
        "project.delete",
        actor_id=actor.id,
        target_type="project",
        target_id=project_id,
        name=project.name,
    )


async def create_model(session: AsyncSession, project: Project, data: ModelCreate) -> Model:
    project_id = project.id
    if await repository.model_by_name(session, project_id, data.name) is not None:
        raise Conflict(f"The project already has a model named {data.name!r}.")
    model = Model(project_id=project_id, name=data.name, description=data.description)
    session.add(model)
    await session.flush()
    await events.publish(
        session, project_id, "model.created", {"name": model.name}, model_id=model.id
    )
    return model


async def list_models(
    session: AsyncSession, project_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[Model], str | None]:
    values = decode_cursor(cursor, 1)
    rows = await repository.list_models(
        session, project_id, str(values[0]) if values else None, limit + 1
    )
    return page_of(rows, limit, lambda m: [m.name])


async def get_model(session: AsyncSession, model_id: uuid.UUID) -> Model:
    model = await session.get(Model, model_id)
    if model is None:
        raise NotFound(f"Model {model_id} does not exist.")
    return model


# ---- membership --------------------------------------------------------------------------


async def list_members(
    session: AsyncSession, project_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[tuple[Membership, User]], str | None]:
    after = None
    if (values := decode_cursor(cursor, 1)) is not None:
        try:
            after = uuid.UUID(str(values[0]))
        except ValueError as exc:
            raise InvalidCursor() from exc
    rows = await repository.members(session, project_id, after, limit + 1)
    return page_of(rows, limit, lambda row: [str(row[0].user_id)])


async def get_member(
    session: AsyncSession, project_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Membership, User]:
    membership = await repository.membership(session, project_id, user_id)
    user = await session.get(User, user_id)
    if membership is None or user is None:
        raise NotFound(f"User {user_id} is not a member of this project.")
    return membership, user


async def _keep_an_owner(session: AsyncSession, membership: Membership | None) -> None:
    if (
        membership is not None
        and membership.role == "owner"
        and await repository.owner_count(session, membership.project_id) <= 1
    ):
        raise Conflict("A project keeps at least one owner.")


async def set_member(
    session: AsyncSession,
    origin: Origin,
    actor: User,
    project_id: uuid.UUID,
    user_id: uuid.UUID,
    role: str,
) -> tuple[Membership, User]:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"User {user_id} does not exist; an admin can invite them.")
    await repository.lock_project(session, project_id)
    forget_after_commit(session, f"project:{project_id}")  # roles are remembered (kit/memo.py)
    membership = await repository.membership(session, project_id, user_id)
    if membership is not None:
        await session.refresh(membership)  # as it is now that the project is locked
    if membership is not None and role != "owner":
        await _keep_an_owner(session, membership)
    previous = membership.role if membership else None
    if membership is None:
        membership = Membership(project_id=project_id, user_id=user_id, role=role)
        session.add(membership)
    membership.role = role
    audit.record(
        session,
        origin,
        "member.set",
        actor_id=actor.id,
        target_type="project",
        target_id=project_id,
        user_id=str(user_id),
        role=role,
        previous=previous,
    )
    await session.flush()
    return membership, user


async def add_member(
    session: AsyncSession, origin: Origin, actor: User, project_id: uuid.UUID, email: str, role: str
) -> tuple[Membership, User]:
    """A member named by email, as people know each other (the console's members page)."""
    user = await auth.user_with_email(session, email)
    if user is None:
        raise NotFound("No account uses this email address; an admin can invite it.")
    return await set_member(session, origin, actor, project_id, user.id, role)


async def remove_member(
    session: AsyncSession, origin: Origin, actor: User, project_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    await repository.lock_project(session, project_id)
    forget_after_commit(session, f"project:{project_id}")
    membership, _ = await get_member(session, project_id, user_id)
    await session.refresh(membership)  # as it is now that the project is locked
    await _keep_an_owner(session, membership)
    await session.delete(membership)
    audit.record(
        session,
        origin,
        "member.remove",
        actor_id=actor.id,
        target_type="project",
        target_id=project_id,
        user_id=str(user_id),
        previous=membership.role,
    )
