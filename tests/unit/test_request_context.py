"""Request ids, the access log, structured JSON logs and problem+json errors."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bem.kit.logging import configure_logging, get_logger
from tests.conftest import Api


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging("INFO", json=True)
    yield stream
    monkeypatch.undo()
    configure_logging("INFO", json=True)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_client_request_id_is_echoed_and_logged(
    sqlite_api: Api, log_lines: io.StringIO
) -> None:
    headers = await sqlite_api.user("alice")
    r = await sqlite_api.client.get("/v1/me", headers={**headers, "X-Request-ID": "req-42.a:b"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-42.a:b"
    access = [e for e in parsed(log_lines) if e.get("logger") == "bem.access"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "req-42.a:b"
    assert line["route"] == "/v1/me" and line["status"] == 200 and line["method"] == "GET"
    assert "duration_ms" in line and line["level"] == "info" and "timestamp" in line


async def test_unsafe_or_missing_request_ids_are_replaced(sqlite_api: Api) -> None:
    r = await sqlite_api.client.get("/health/live", headers={"X-Request-ID": "bad id\nforged"})
    assert r.headers["x-request-id"] != "bad id\nforged" and len(r.headers["x-request-id"]) == 32
    r = await sqlite_api.client.get("/health/live")
    assert len(r.headers["x-request-id"]) == 32


async def test_unknown_errors_are_a_generic_500_with_traceback_in_the_log_only(
    sqlite_api: Api, log_lines: io.StringIO
) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    sqlite_api.app.add_api_route("/boom", boom)
    r = await sqlite_api.client.get("/boom", headers={"X-Request-ID": "ref-500"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["request_id"] == "ref-500" and "ref-500" in body["detail"]
    assert "hunter2" not in r.text and "Traceback" not in r.text
    events = parsed(log_lines)
    error = next(e for e in events if e["event"] == "unhandled_error")
    assert error["request_id"] == "ref-500" and "RuntimeError" in error["exception"]
    access = next(e for e in events if e.get("logger") == "bem.access")
    assert access["status"] == 500 and access["request_id"] == "ref-500"


def test_secret_looking_fields_and_tokens_are_masked(log_lines: io.StringIO) -> None:
    get_logger("test").info(
        "login", password="hunter2", token="abc", note="header was Bearer bem_pat_SECRET123"
    )
    (event,) = parsed(log_lines)
    assert event["password"] == "[Filtered]" and event["token"] == "[Filtered]"
    assert "SECRET123" not in event["note"]


SECRETS = {
    "refresh token": "bem_rt_Zk3N0tAR3alR3fr3sh",
    "API token": "bem_pat_S3cr3tT0k3nValue",
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    "email": "alice@example.com",
}


def test_the_log_and_error_reports_mask_the_same_secrets(log_lines: io.StringIO) -> None:
    """The two scrubbers had drifted: the log masked API tokens only, so refresh tokens,
    JWTs and email addresses reached it (in exception messages too)."""
    from bem.kit.errortracking import scrub

    text = "; ".join(f"{k}={v}" for k, v in SECRETS.items())
    log = get_logger("test")
    log.info("note", detail=text)
    try:
        raise RuntimeError(text)
    except RuntimeError:
        log.exception("failed")
    report = scrub({"message": text, "exception": {"values": [{"value": text}]}}, {})
    for name, secret in SECRETS.items():
        assert secret not in log_lines.getvalue(), f"the log shows a {name}"
        assert secret not in str(report), f"an error report shows a {name}"
    log.info("login", email="a***@example.com")
    assert "a***@example.com" in log_lines.getvalue()  # masked addresses stay as they are


async def test_validation_errors_list_each_field(sqlite_api: Api) -> None:
    headers = await sqlite_api.user("alice")
    r = await sqlite_api.client.post("/v1/projects", json={"name": 1, "x": 2}, headers=headers)
    problem = r.json()
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in problem["errors"]} == {("body", "name"), ("body", "x")}
    assert problem["title"] == "Unprocessable Entity" and problem["status"] == 422


async def test_unknown_routes_and_methods_are_problems(sqlite_api: Api) -> None:
    r = await sqlite_api.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await sqlite_api.client.put("/health/live")
    assert r.status_code == 405 and r.json()["type"].endswith("/method-not-allowed")
