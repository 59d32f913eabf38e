"""Hostile input against every write route: each request is refused with a 4xx problem and
the database is unchanged, row for row. Hostile *text* in free-text fields (HTML, SQL) is
data, not an attack on a JSON API: it is stored verbatim and never executed."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text

import bem.models  # noqa: F401 - every table
from bem.kit.db import Base
from bem.kit.routes import api_routes
from tests.conftest import Api
from tests.integration.test_permissions import SAMPLE_BODIES, make_world

WRITE = {"POST", "PUT", "PATCH", "DELETE"}
BAD_IDS = ["1' OR '1'='1", "..%2F..%2Fetc%2Fpasswd", "%00", "-1", "0" * 300]
NUL = "a\x00b"
HUGE = 3 * 1024 * 1024


async def snapshot(api: Api) -> dict[str, list[Any]]:
    out = {}
    async with api.app.state.sessions() as session:
        for table in Base.metadata.sorted_tables:
            columns = ", ".join(c.name for c in table.columns)
            rows = await session.execute(text(f"SELECT {columns} FROM {table.name}"))  # noqa: S608
            out[table.name] = sorted(repr(tuple(r)) for r in rows)
    return out


def deep(n: int) -> bytes:
    return b'{"name": ' + b"[" * n + b"]" * n + b"}"


def hostile_bodies(sample: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """(label, body, content type) variants of a valid sample body."""
    variants: list[tuple[str, bytes, str]] = [
        ("malformed JSON", b'{"name": ', "application/json"),
        ("deep JSON", deep(5000), "application/json"),
        ("huge body", b'{"name": "' + b"x" * HUGE + b'"}', "application/json"),
        ("wrong content type", orjson.dumps(sample), "text/plain"),
        ("not an object", b"[1, 2, 3]", "application/json"),
        (
            "unknown field",
            orjson.dumps({**sample, "is_admin": True, "owner": "me"}),
            "application/json",
        ),
    ]
    for key, value in sample.items():
        wrong: list[Any] = [[], {}, True] if isinstance(value, str) else ["x" * 10, {"a": 1}]
        if isinstance(value, str):
            wrong += [NUL, "x" * 10_000, 12345]
        for w in wrong:
            label = f"{key}={str(w)[:12]!r}"
            variants.append((label, orjson.dumps({**sample, key: w}), "application/json"))
    return variants


async def test_hostile_requests_are_refused_and_change_nothing(api: Api) -> None:
    owner = await api.user("alice")
    await api.user("vic")
    world = await make_world(
        api, owner, {"ed": (await _uid(api, "ed")), "vic": api.users["vic"].id}
    )
    before = await snapshot(api)
    ids = {
        "project_id": world.project_id,
        "model_id": world.model_id,
        "version_id": world.version_id,
        "user_id": str(api.users["vic"].id),
        "token_id": "00000000-0000-0000-0000-000000000000",
        "webhook_id": world.webhook_id,
    }
    tried = 0
    for route in api_routes(api.app):
        for method in sorted(route.methods & WRITE):
            key = f"{method} {route.path}"
            sample = SAMPLE_BODIES.get(key)
            good_path = route.path.format(**ids)
            requests: list[tuple[str, str, bytes | None, str | None]] = []
            for name in ids:
                if "{" + name + "}" in route.path:
                    for bad in BAD_IDS:
                        path = route.path.format(**{**ids, name: bad})
                        body = orjson.dumps(sample) if isinstance(sample, dict) else None
                        requests.append((f"{name}={bad[:10]}", path, body, "application/json"))
            if isinstance(sample, dict):
                for label, body, ctype in hostile_bodies(sample):
                    requests.append((label, good_path, body, ctype))
            elif isinstance(sample, bytes):  # NDJSON upload
                for label, body in (
                    ("NUL in name", sample.replace(b'"L1"', b'"L\\u0000"')),
                    ("truncated", sample[:-5]),
                    ("huge line", b'{"name": "' + b"x" * (5 * 1024 * 1024)),
                ):
                    requests.append((label, good_path, body, "application/x-ndjson"))
                requests.append(("wrong type", good_path, sample, "text/csv"))
            for label, path, body, ctype in requests:
                headers = dict(owner)
                if ctype is not None and body is not None:
                    headers["content-type"] = ctype
                r = await api.client.request(method, path, content=body, headers=headers)
                tried += 1
                assert 400 <= r.status_code < 500, (
                    f"{key} [{label}] -> {r.status_code} {r.text[:200]}"
                )
                assert r.headers["content-type"] == "application/problem+json", f"{key} [{label}]"
    assert tried > 150
    assert await snapshot(api) == before


async def _uid(api: Api, name: str) -> Any:
    await api.user(name)
    return api.users[name].id


async def test_html_and_sql_text_is_stored_verbatim_and_never_executed(api: Api) -> None:
    alice = await api.user("alice")
    payloads = [
        "<script>alert(1)</script>",
        "'; DROP TABLE projects; --",
        "Robert'); DELETE FROM users WHERE ('1'='1",
        '"><img src=x onerror=alert(1)>',
    ]
    for payload in payloads:
        r = await api.client.post(
            "/v1/projects", json={"name": payload, "description": payload}, headers=alice
        )
        assert r.status_code == 201
        assert r.headers["content-type"] == "application/json"  # JSON, never HTML
        got = (await api.client.get(f"/v1/projects/{r.json()['id']}", headers=alice)).json()
        assert got["name"] == payload and got["description"] == payload
    assert await api.scalar("SELECT count(*) FROM projects") == len(payloads)
    assert await api.scalar("SELECT count(*) FROM users") == 1
