"""Content types, body sizes, CORS, security headers and locally served API docs."""

from __future__ import annotations

import httpx

from tests.conftest import Api, make_api, settings_for


async def test_json_routes_refuse_other_content_types(sqlite_api: Api) -> None:
    alice = await sqlite_api.user("alice")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        r = await sqlite_api.client.post(
            "/v1/projects",
            content=b'{"name": "x"}',
            headers={**alice, "content-type": content_type},
        )
        assert r.status_code == 415, content_type
        assert r.json()["accepted"] == ["application/json"]
    r = await sqlite_api.client.post("/v1/projects", content=b'{"name": "x"}', headers=alice)
    assert r.status_code == 415  # no content type at all
    assert await sqlite_api.scalar("SELECT count(*) FROM projects") == 0


async def test_json_bodies_are_size_limited_before_reading(sqlite_url: str) -> None:
    async with make_api(settings_for(sqlite_url, max_request_body_bytes=2048)) as api:
        alice = await api.user("alice")
        big = b'{"name": "x", "description": "' + b"d" * 4000 + b'"}'
        headers = {**alice, "content-type": "application/json"}
        r = await api.client.post("/v1/projects", content=big, headers=headers)
        assert r.status_code == 413 and r.json()["limit"] == 2048

        async def chunked() -> object:  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b" " * 1000

        r = await api.client.post("/v1/projects", content=chunked(), headers=headers)
        assert r.status_code == 413
        assert await api.scalar("SELECT count(*) FROM projects") == 0


async def test_security_headers_on_every_response(sqlite_api: Api) -> None:
    for path in ("/health/live", "/v1/me", "/v1/nowhere"):
        r = await sqlite_api.client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert "strict-transport-security" not in r.headers  # plain http
    transport = httpx.ASGITransport(app=sqlite_api.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://bem.test") as tls:
        r = await tls.get("/health/live")
        assert r.headers["strict-transport-security"].startswith("max-age=")


async def test_docs_are_served_from_local_assets(sqlite_api: Api) -> None:
    for path, asset in (
        ("/docs", "/docs-assets/swagger-ui-bundle.js"),
        ("/redoc", "/docs-assets/redoc.standalone.js"),
    ):
        r = await sqlite_api.client.get(path)
        assert r.status_code == 200 and asset in r.text
        assert "cdn." not in r.text and "googleapis" not in r.text
        assert "'self'" in r.headers["content-security-policy"]
        script = await sqlite_api.client.get(asset)
        assert script.status_code == 200 and len(script.content) > 100_000


async def test_cors_allows_only_listed_origins(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url, cors_origins=["https://viewer.example.com"])
    async with make_api(settings) as api:
        preflight = {
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        ok = await api.client.options(
            "/v1/projects", headers={"Origin": "https://viewer.example.com", **preflight}
        )
        assert ok.headers["access-control-allow-origin"] == "https://viewer.example.com"
        assert "access-control-allow-credentials" not in ok.headers
        for origin in ("https://evil.example.com", "null"):
            r = await api.client.options("/v1/projects", headers={"Origin": origin, **preflight})
            assert "access-control-allow-origin" not in r.headers, origin
            r = await api.client.get("/health/live", headers={"Origin": origin})
            assert "access-control-allow-origin" not in r.headers, origin


def test_cors_configuration_refuses_wildcards_and_null() -> None:
    import pytest
    from pydantic import ValidationError

    from bem.config import Settings

    for bad in (["*"], ["null"], ["https://*.example.com"], ["ftp://x.example.com"]):
        with pytest.raises(ValidationError):
            Settings(cors_origins=bad)


async def test_unknown_query_parameters_are_refused(sqlite_api: Api) -> None:
    """A misspelt parameter (``limt=10``) was ignored silently; it is a 400 naming it."""
    alice = await sqlite_api.user("alice")
    for path, params in (
        ("/v1/projects", {"limt": "10"}),
        ("/v1/me", {"x": "1"}),
        ("/v1/projects", {"limit": "10", "extra": "1"}),
    ):
        r = await sqlite_api.client.get(path, params=params, headers=alice)
        assert r.status_code == 400, (path, params, r.text)
        body = r.json()
        assert body["type"].endswith("/unknown-parameter") and body["parameter"] in params
    assert (
        await sqlite_api.client.get("/v1/projects", params={"limit": 5}, headers=alice)
    ).is_success
    # Probes and docs stay lenient: load balancers add their own parameters.
    assert (await sqlite_api.client.get("/health/live", params={"probe": "1"})).status_code == 200
