"""Hostile input against every write route: each request is refused with a 4xx problem and
the database is unchanged, row for row. Hostile *text* in free-text fields (HTML, SQL) is
data, not an attack on a JSON API: it is stored verbatim and never executed."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from sqlalchemy import text

import bem.models  # noqa: F401 - every table
from bem.kit.db import Base
from bem.kit.routes import api_routes, query_parameters
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


# Opaque cursors a client can forge: base64url of JSON that decodes but means nothing.
FORGED_CURSORS = {
    "int beyond int64": b"[99999999999999999999]",
    "negative int beyond int64": b"[-99999999999999999999, 1]",
    "boolean": b"[true]",
    "booleans": b"[true, false]",
    "float": b"[1.5]",
    "NUL": b'["a\\u0000b"]',
    "NULs": b'["a\\u0000b", "c\\u0000"]',
}
# Lists ordered by (created_at, id): a position without a time zone is not one of theirs.
NAIVE = b'["2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]'
TIME_ORDERED = ("/v1/projects", "/v1/models/{model_id}/versions", "/v1/admin/backups")
HUGE_INT = "99999999999999999999"


def forged(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_crafted_read_parameters_are_4xx_naming_the_parameter(api: Api) -> None:
    """Integers past int64, booleans, naive timestamps and NUL in cursors, selector values
    and event ids answered 500; each is a 400/422 that names what was wrong."""
    owner = await api.user("root", admin=True)
    await api.user("vic")
    world = await make_world(api, owner, {"ed": await _uid(api, "ed"), "vic": api.users["vic"].id})
    ids = {
        "project_id": world.project_id,
        "model_id": world.model_id,
        "version_id": world.version_id,
        "other_version_id": world.version_id,
        "webhook_id": world.webhook_id,
        "backup_id": "00000000-0000-0000-0000-000000000000",
    }
    calls: list[tuple[str, dict[str, str]]] = []
    for route in api_routes(api.app):
        names = query_parameters(route)
        known = {**ids, "global_id": "0000000000000000000S01", "user_id": str(api.users["vic"].id)}
        if "GET" not in route.methods or "{job_id}" in route.path or "{token_id}" in route.path:
            continue
        path = route.path.format(**known)
        if "cursor" in names:
            if route.path in TIME_ORDERED:
                calls.append((path, {"cursor": forged(NAIVE)}))
            for raw in FORGED_CURSORS.values():
                calls.append((path, {"cursor": forged(raw)}))
                if "sort" in names:
                    calls.append((path, {"cursor": forged(raw), "sort": "name"}))
        if "after" in names:
            calls += [(path, {"after": HUGE_INT}), (path, {"after": "-1"})]
        if "q" in names:
            calls += [
                (path, {"q": f"IfcWall, Pset_WallCommon.FireRating={HUGE_INT}"}),
                (path, {"q": f"IfcWall, Pset_WallCommon.FireRating<-{HUGE_INT}"}),
                (path, {"q": "IfcWall, Name=a\x00b"}),
            ]
    assert len(calls) > 60
    for path, params in calls:
        r = await api.client.get(path, params=params, headers=owner)
        label = f"GET {path} {params}"
        if "q" in params and "\x00" not in params["q"]:
            assert r.status_code == 200, f"{label} -> {r.status_code} {r.text[:300]}"
            continue  # a number too big for int64 is still a number: it just matches nothing
        assert 400 <= r.status_code < 500, f"{label} -> {r.status_code} {r.text[:300]}"
        named = {r.json().get("parameter")} | {e["loc"][-1] for e in r.json().get("errors") or []}
        assert next(iter(params)) in named, f"{label}: the answer does not name it: {r.text}"


async def test_control_characters_in_an_imported_file_name_are_refused(api: Api) -> None:
    owner = await api.user("alice")
    world = await make_world(
        api, owner, {"ed": await _uid(api, "ed"), "vic": await _uid(api, "vic")}
    )
    before = await snapshot(api)
    content = SAMPLE_BODIES["POST /v1/models/{model_id}/imports"][1]
    for name in (b"a\x00b.ndjson", b"escape\x1b[2J.ndjson", b"bell\x07.ndjson"):
        # Written by hand: httpx would percent-encode the name; a hostile client need not.
        body = (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--x--\r\n"
        )
        r = await api.client.post(
            f"/v1/models/{world.model_id}/imports",
            content=body,
            headers={**owner, "content-type": "multipart/form-data; boundary=x"},
        )
        assert r.status_code == 422 and r.json()["parameter"] == "file", (name, r.text)
    assert await snapshot(api) == before


async def test_an_import_is_authorized_before_its_body_is_read(sqlite_api: Api) -> None:
    """The multipart body was spooled to disk (up to the import limit) before anything
    checked the caller: anyone could make the server write gigabytes."""
    owner = await sqlite_api.user("alice")
    world = await make_world(
        sqlite_api,
        owner,
        {"ed": await _uid(sqlite_api, "ed"), "vic": await _uid(sqlite_api, "vic")},
    )
    sent = 0

    async def body() -> Any:
        nonlocal sent
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.ifc"\r\n\r\n'
        for _ in range(100):
            sent += 1
            yield b"x" * (1024 * 1024)
        yield b"\r\n--x--\r\n"

    for headers in ({}, {"Authorization": "Bearer bem_pat_forged"}, await sqlite_api.user("olga")):
        sent = 0
        r = await sqlite_api.client.post(
            f"/v1/models/{world.model_id}/imports",
            content=body(),
            headers={**headers, "content-type": "multipart/form-data; boundary=x"},
        )
        assert r.status_code in (401, 404), r.text
        assert sent <= 2, f"{sent} MiB of the body were read before the answer"
