"""Deny by default: every route of the app declares a permission, and every route is called
by every kind of caller, with the outcome checked against the permission table.

A new route without a permission, or without a sample request here, fails this suite.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text

from bem.auth.dependencies import permission_of
from bem.auth.permissions import Permission, Role, Scope, expand
from bem.auth.sessions import issue_access_token
from bem.kit.routes import api_routes
from tests.conftest import Api
from tests.integration.test_imports import wait_for

STOREY = "0000000000000000000S01"

# One valid request per route: body (JSON, or NDJSON bytes) by "METHOD path".
SAMPLE_BODIES: dict[str, Any] = {
    "POST /v1/auth/otp/request": {"email": "someone-{n}@example.com"},
    "POST /v1/auth/otp/verify": {"email": "someone@example.com", "code": "123456"},
    "POST /v1/auth/token/refresh": {"refresh_token": "bem_rt_unknown"},
    "POST /v1/auth/logout": {"refresh_token": "bem_rt_unknown"},
    "POST /v1/me/tokens": {"name": "t", "scopes": ["projects:read"]},
    "POST /v1/me/totp/confirm": {"code": "000000"},
    "POST /v1/me/totp/disable": {"code": "000000"},
    "POST /v1/admin/users": {"email": "invitee-{n}@example.com", "name": "Invitee"},
    "POST /v1/projects": {"name": "New"},
    "PATCH /v1/projects/{project_id}": {"name": "Renamed"},
    "POST /v1/projects/{project_id}/models": {"name": "Model {n}"},
    "PUT /v1/projects/{project_id}/members/{user_id}": {"role": "editor"},
    "POST /v1/projects/{project_id}/members": {"email": "olga@example.com", "role": "viewer"},
    "POST /v1/versions/{version_id}/geometry": None,
    "POST /v1/models/{model_id}/versions": orjson.dumps(
        {"global_id": STOREY, "ifc_class": "IfcBuildingStorey", "name": "L1"}
    ),
    "POST /v1/me/totp": None,
    "POST /v1/admin/backups": None,
    "POST /v1/versions/{version_id}/query": {"q": "IfcBuildingStorey"},
    "POST /v1/projects/{project_id}/webhooks": {"url": "http://127.0.0.1:9/hook-{n}"},
    # A multipart file upload: (file name, content).
    "POST /v1/models/{model_id}/imports": (
        "storey.ndjson",
        orjson.dumps({"global_id": STOREY, "ifc_class": "IfcBuildingStorey"}),
    ),
}
BODILESS = ("GET", "DELETE")
HOOK_URL = "http://127.0.0.1:9/hook"  # nothing listens: deliveries fail, harmlessly


@dataclass
class Caller:
    name: str
    headers: dict[str, str]
    user: str | None = None  # which world user it acts as
    scopes: frozenset[Scope] = frozenset()
    admin: bool = False
    bound_elsewhere: bool = False


@dataclass
class World:
    project_id: str
    model_id: str
    version_id: str
    users: dict[str, uuid.UUID] = field(default_factory=dict)
    job_id: str = ""
    webhook_id: str = ""
    backup_id: str = ""


ROLES = {"alice": Role.owner, "ed": Role.editor, "vic": Role.viewer}


MINTED = frozenset({Scope.projects_read})  # what the sample POST /v1/me/tokens asks for


def expected(caller: Caller, permission: Permission, key: str) -> str:
    """The permission table, written independently of the code that enforces it. (Public
    routes are checked separately: every caller must get the same answer.)"""
    if caller.user is None:
        return "401"
    if permission.scope is not None and permission.scope not in caller.scopes:
        return "403"
    if permission.admin_only and not caller.admin:
        return "403"
    if caller.bound_elsewhere and (permission.admin_only or key == "POST /v1/projects"):
        return "403"  # a project-bound token reaches nothing beyond its project
    if key == "POST /v1/me/tokens" and not caller.scopes >= MINTED:
        return "403"  # a token cannot grant what its creator lacks
    if permission.role is None:
        return "ok"
    if caller.bound_elsewhere:
        return "404"
    role = Role.owner if caller.admin else ROLES.get(caller.user)
    if role is None:
        return "404"
    return "ok" if role >= permission.role else "403"


def outcome(status: int) -> str:
    return str(status) if status in (401, 403, 404) else "ok"


async def make_world(api: Api, owner: dict[str, str], users: dict[str, uuid.UUID]) -> World:
    api.settings.webhook_allow_private = True  # the world's webhook points at 127.0.0.1
    c = api.client
    pid = (await c.post("/v1/projects", json={"name": "P"}, headers=owner)).json()["id"]
    for name, role in (("ed", "editor"), ("vic", "viewer")):
        r = await c.put(
            f"/v1/projects/{pid}/members/{users[name]}", json={"role": role}, headers=owner
        )
        assert r.status_code == 200, r.text
    mid = (await c.post(f"/v1/projects/{pid}/models", json={"name": "M"}, headers=owner)).json()
    body = SAMPLE_BODIES["POST /v1/models/{model_id}/versions"]
    r = await c.post(
        f"/v1/models/{mid['id']}/versions",
        content=body,
        headers={**owner, "content-type": "application/x-ndjson"},
    )
    hook = await c.post(f"/v1/projects/{pid}/webhooks", json={"url": HOOK_URL}, headers=owner)
    assert hook.status_code == 201, hook.text
    return World(pid, mid["id"], r.json()["id"], users, webhook_id=hook.json()["id"])


async def callers(api: Api, other_project: uuid.UUID) -> list[Caller]:
    session_scopes = frozenset(Scope) - {Scope.admin}
    out = [
        Caller("no token", {}),
        Caller("garbage token", {"Authorization": "Bearer nonsense"}),
    ]
    for name in ("alice", "ed", "vic", "olga"):
        out.append(Caller(f"{name} (session)", await api.user(name), name, session_scopes))
    out.append(
        Caller(
            "root (admin session)",
            await api.user("root", admin=True),
            "root",
            frozenset(Scope),
            admin=True,
        )
    )
    expired = issue_access_token(
        api.settings, api.users["alice"].id, datetime.now(UTC) - timedelta(hours=2)
    )
    out.append(Caller("alice (expired session)", {"Authorization": f"Bearer {expired}"}))
    out.append(
        Caller(
            "alice read-only token",
            await api.api_token("alice", ["projects:read"]),
            "alice",
            expand(frozenset({Scope.projects_read})),
        )
    )
    writer = ["projects:write", "models:write", "account"]
    out.append(
        Caller(
            "alice token of another project",
            await api.api_token("alice", writer, project_id=other_project),
            "alice",
            expand(frozenset(Scope(s) for s in writer)),
            bound_elsewhere=True,
        )
    )
    out.append(
        Caller(
            "alice account-only token of another project",
            await api.api_token("alice", ["account"], project_id=other_project),
            "alice",
            frozenset({Scope.account}),
            bound_elsewhere=True,
        )
    )
    out.append(
        Caller(
            "root admin token",
            await api.api_token("root", ["admin"]),
            "root",
            frozenset(Scope),
            admin=True,
        )
    )
    out.append(
        Caller(
            "root admin token of another project",
            await api.api_token("root", ["admin"], project_id=other_project),
            "root",
            frozenset(Scope),
            admin=True,
            bound_elsewhere=True,
        )
    )
    return out


def fill(path: str, world: World, n: int, token_id: str) -> str:
    return path.format(
        project_id=world.project_id,
        model_id=world.model_id,
        version_id=world.version_id,
        other_version_id=world.version_id,
        job_id=world.job_id,
        global_id=STOREY,
        user_id=world.users["vic"],
        token_id=token_id,
        webhook_id=world.webhook_id,
        backup_id=world.backup_id,
    ).replace("{n}", str(n))


async def _no_events(*_: Any) -> AsyncIterator[Any]:
    """A feed that ends at once: the event stream answers, then closes (this test is about
    who may open it, test_live.py about what it carries)."""
    return
    yield


async def test_every_route_declares_a_permission_and_enforces_it(api: Api) -> None:
    api.hub.follow = _no_events
    routes = list(api_routes(api.app))
    undeclared = [
        f"{sorted(r.methods)} {r.path}" for r in routes if permission_of(r.dependant) is None
    ]
    assert undeclared == [], f"routes without a permission: {undeclared}"

    owner = await api.user("alice")
    for name in ("ed", "vic", "olga"):
        await api.user(name)
    users = {name: u.id for name, u in api.users.items()}
    other = await api.client.post("/v1/projects", json={"name": "Other"}, headers=owner)
    everyone = await callers(api, uuid.UUID(other.json()["id"]))
    shared = await make_world(api, owner, users)
    # The shared world reads a version imported from a file, so it has a source to download.
    shared.job_id = (
        await api.client.post(
            f"/v1/models/{shared.model_id}/imports",
            files={"file": SAMPLE_BODIES["POST /v1/models/{model_id}/imports"]},
            headers=owner,
        )
    ).json()["id"]
    shared.version_id = (await wait_for(api, owner, shared.job_id))["version_id"]
    async with api.state.sessions() as session:  # a finished backup, for GET .../{backup_id}
        shared.backup_id = uuid.uuid4().hex
        insert = "INSERT INTO backups (id, status, origin, requested_at, verification) VALUES"
        await session.execute(
            text(f"{insert} (:id, 'failed', 'cli', :at, 'unverified')"),
            {"id": shared.backup_id, "at": datetime.now(UTC)},
        )
        await session.commit()

    mismatches, n = [], 0
    for route in routes:
        permission = permission_of(route.dependant)
        assert permission is not None
        for method in sorted(route.methods):
            key = f"{method} {route.path}"
            if method not in BODILESS:
                assert key in SAMPLE_BODIES, f"add a sample request for {key} to this test"
            public_statuses = set()
            for caller in everyone:
                n += 1
                world = shared if method == "GET" else await make_world(api, owner, users)
                token_id = str(uuid.uuid4())
                if route.path.endswith("{token_id}") and caller.user is not None:
                    created = await api.client.post(
                        "/v1/me/tokens",
                        json={"name": "x", "scopes": ["projects:read"]},
                        headers=await api.user(caller.user),
                    )
                    token_id = created.json()["id"]
                path = fill(route.path, world, n, token_id)
                body = SAMPLE_BODIES.get(key)
                kwargs: dict[str, Any] = {"headers": dict(caller.headers)}
                if isinstance(body, tuple):
                    kwargs["files"] = {"file": body}
                elif isinstance(body, bytes):
                    kwargs["content"] = body
                    kwargs["headers"]["content-type"] = "application/x-ndjson"
                elif isinstance(body, dict):
                    kwargs["content"] = orjson.dumps(body).replace(b"{n}", str(n).encode())
                    kwargs["headers"]["content-type"] = "application/json"
                r = await api.client.request(method, path, **kwargs)
                assert r.status_code < 500, f"{key} as {caller.name}: {r.status_code}"
                if permission.public:
                    public_statuses.add(r.status_code)
                    continue
                want, got = expected(caller, permission, key), outcome(r.status_code)
                if want != got:
                    mismatches.append(f"{key} as {caller.name}: want {want}, got {r.status_code}")
            if permission.public and len(public_statuses) != 1:
                mismatches.append(f"{key} is public but answers by caller: {public_statuses}")
    assert mismatches == [], "\n".join(mismatches)
    assert n >= len(routes) * len(everyone)
