"""What each route needs, in one table. Routes declare one of these with
``dependencies=[allow(PERMISSION)]`` (see ``auth/dependencies.py``); a route without one
fails the route-table test, and OpenAPI shows it as ``x-permission``.

A permission combines a token scope (what the credential may do) with, for project routes,
a minimum project role (what the user may do in that project). Server admins pass every
role check; their credential still needs the scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class Scope(StrEnum):
    projects_read = "projects:read"
    projects_write = "projects:write"
    models_write = "models:write"
    account = "account"
    admin = "admin"


# A scope also grants the scopes it implies.
IMPLIES: dict[Scope, frozenset[Scope]] = {
    Scope.admin: frozenset(Scope),
    Scope.projects_write: frozenset({Scope.projects_read}),
    Scope.models_write: frozenset({Scope.projects_read}),
}


def expand(scopes: frozenset[Scope]) -> frozenset[Scope]:
    out = set(scopes)
    for scope in scopes:
        out |= IMPLIES.get(scope, frozenset())
    return frozenset(out)


class Role(IntEnum):
    viewer = 1
    editor = 2
    owner = 3


@dataclass(frozen=True)
class Permission:
    name: str
    scope: Scope | None  # None: any authenticated credential
    role: Role | None = None  # set: a project route; the project comes from the path
    admin_only: bool = False
    public: bool = False
    # Reaches beyond any one project (creating projects, server administration): refused to
    # a credential bound to a project, whatever its scopes.
    unbound_only: bool = False

    @property
    def refuses_bound(self) -> bool:
        return self.unbound_only or self.admin_only

    def describe(self) -> str:
        if self.public:
            return "public"
        parts = [f"scope {self.scope.value}" if self.scope else "any credential"]
        if self.role is not None:
            parts.append(f"project role >= {self.role.name}")
        if self.admin_only:
            parts.append("server admin")
        if self.refuses_bound:
            parts.append("not with a project-bound token")
        return ", ".join(parts)


PUBLIC = Permission("public", None, public=True)
AUTHENTICATED = Permission("authenticated", None)
ACCOUNT = Permission("account", Scope.account)
PROJECTS_LIST = Permission("projects.list", Scope.projects_read)
PROJECTS_CREATE = Permission("projects.create", Scope.projects_write, unbound_only=True)
PROJECT_READ = Permission("project.read", Scope.projects_read, Role.viewer)
PROJECT_EDIT = Permission("project.edit", Scope.models_write, Role.editor)
PROJECT_MANAGE = Permission("project.manage", Scope.projects_write, Role.owner)
ADMIN = Permission("admin", Scope.admin, admin_only=True)
