"""Projects and models over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from tests.conftest import Api


async def test_requires_a_valid_bearer_token(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer bem_pat_nope"}, {"Authorization": "Basic x"}):
        r = await api.client.get("/v1/projects", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["request_id"] == r.headers["x-request-id"]


async def test_project_lifecycle(api: Api) -> None:
    alice = await api.user("alice")
    r = await api.client.post(
        "/v1/projects", json={"name": "Tower", "description": "42 floors"}, headers=alice
    )
    assert r.status_code == 201, r.text
    project = r.json()
    pid = project["id"]
    assert project["name"] == "Tower"

    r = await api.client.get(f"/v1/projects/{pid}", headers=alice)
    assert r.status_code == 200 and r.json()["description"] == "42 floors"

    r = await api.client.patch(f"/v1/projects/{pid}", json={"name": "Tower B"}, headers=alice)
    assert r.status_code == 200 and r.json()["name"] == "Tower B"
    assert r.json()["description"] == "42 floors"

    r = await api.client.post(f"/v1/projects/{pid}/models", json={"name": "Arch"}, headers=alice)
    assert r.status_code == 201
    model = r.json()
    r = await api.client.get(f"/v1/models/{model['id']}", headers=alice)
    assert r.status_code == 200 and r.json()["project_id"] == pid

    r = await api.client.post(f"/v1/projects/{pid}/models", json={"name": "Arch"}, headers=alice)
    assert r.status_code == 409

    r = await api.client.delete(f"/v1/projects/{pid}", headers=alice)
    assert r.status_code == 204
    assert (await api.client.get(f"/v1/projects/{pid}", headers=alice)).status_code == 404
    assert (await api.client.get(f"/v1/models/{model['id']}", headers=alice)).status_code == 404
    assert await api.scalar("SELECT count(*) FROM models") == 0


async def test_other_users_projects_are_not_visible(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    admin = await api.user("root", admin=True)
    pid = (await api.client.post("/v1/projects", json={"name": "A"}, headers=alice)).json()["id"]
    assert (await api.client.get(f"/v1/projects/{pid}", headers=bob)).status_code == 404
    r = await api.client.patch(f"/v1/projects/{pid}", json={"name": "mine"}, headers=bob)
    assert r.status_code == 404
    assert (await api.client.delete(f"/v1/projects/{pid}", headers=bob)).status_code == 404
    r = await api.client.post(f"/v1/projects/{pid}/models", json={"name": "x"}, headers=bob)
    assert r.status_code == 404
    assert (await api.client.get("/v1/projects", headers=bob)).json()["items"] == []
    assert (await api.client.get(f"/v1/projects/{pid}", headers=admin)).status_code == 200


async def test_projects_paginate_with_opaque_cursor(api: Api) -> None:
    alice = await api.user("alice")
    created = []
    for i in range(7):
        r = await api.client.post("/v1/projects", json={"name": f"P{i}"}, headers=alice)
        created.append(r.json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/projects", params=params, headers=alice)).json()
        assert len(page["items"]) <= 3
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created


async def test_bad_input_is_a_problem_and_changes_nothing(api: Api) -> None:
    alice = await api.user("alice")
    bad_bodies = [
        {"name": ""},
        {"name": "x" * 300},
        {"name": "nul\x00byte"},
        {"name": 5},
        {"name": "ok", "owner": "me"},
        {"description": "no name"},
    ]
    for body in bad_bodies:
        r = await api.client.post("/v1/projects", json=body, headers=alice)
        assert r.status_code == 422, body
        problem = r.json()
        assert problem["type"].endswith("/validation-error")
        assert problem["errors"] and all("loc" in e for e in problem["errors"])
    r = await api.client.post(
        "/v1/projects", content=b"{not json", headers={**alice, "content-type": "application/json"}
    )
    assert r.status_code == 422
    for params in ({"limit": 0}, {"limit": 1001}, {"cursor": "%%%"}, {"cursor": "WzFd"}):
        r = await api.client.get("/v1/projects", params=params, headers=alice)
        assert r.status_code in (400, 422), params
    assert (await api.client.get("/v1/projects/not-a-uuid", headers=alice)).status_code == 422
    missing = uuid.uuid4()
    assert (await api.client.get(f"/v1/projects/{missing}", headers=alice)).status_code == 404
    assert await api.scalar("SELECT count(*) FROM projects") == 0


async def test_sqlite_write_lock_held_too_long_is_a_503(sqlite_url: str) -> None:
    import sqlite3

    from tests.conftest import make_api, settings_for

    settings = settings_for(sqlite_url, db_connect_timeout=0.2)
    async with make_api(settings) as api:
        alice = await api.user("alice")
        blocker = sqlite3.connect(sqlite_url.split(":///", 1)[1])
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            r = await api.client.post("/v1/projects", json={"name": "P"}, headers=alice)
        finally:
            blocker.rollback()
            blocker.close()
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["type"].endswith("/database-unavailable")
        r = await api.client.post("/v1/projects", json={"name": "P"}, headers=alice)
        assert r.status_code == 201


async def test_model_names_are_unicode_normalized_keys(sqlite_api: Api) -> None:
    alice = await sqlite_api.user("alice")
    r = await sqlite_api.client.post("/v1/projects", json={"name": "P"}, headers=alice)
    pid = r.json()["id"]
    composed, decomposed = "Caf\u00e9", "Cafe\u0301"
    r = await sqlite_api.client.post(
        f"/v1/projects/{pid}/models", json={"name": composed}, headers=alice
    )
    assert r.status_code == 201
    r = await sqlite_api.client.post(
        f"/v1/projects/{pid}/models", json={"name": decomposed}, headers=alice
    )
    assert r.status_code == 409  # the same name, spelled with a combining accent
