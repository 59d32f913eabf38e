"""Email OTP login, sessions and refresh-token rotation, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, make_api, settings_for


@pytest.fixture
async def mail_api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = settings_for(database_url, mail_backend="file", mail_file_dir=tmp_path / "mail")
    async with make_api(settings) as api:
        yield api


def inbox(api: Api) -> list[email.message.Message]:
    directory = api.settings.mail_file_dir
    if not directory.exists():
        return []
    files = sorted(directory.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    return [email.message_from_bytes(p.read_bytes()) for p in files]


def code_in(message: email.message.Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(rb"code is (\d{6,10})", body)
    assert found is not None
    return found.group(1).decode()


async def invite(api: Api, address: str) -> None:
    admin = await api.user("root", admin=True)
    r = await api.client.post(
        "/v1/admin/users", json={"email": address, "name": "Alice"}, headers=admin
    )
    assert r.status_code == 201, r.text


async def login(api: Api, address: str, **extra: Any) -> Any:
    r = await api.client.post("/v1/auth/otp/request", json={"email": address})
    assert r.status_code == 202
    code = code_in(inbox(api)[-1])
    return await api.client.post(
        "/v1/auth/otp/verify", json={"email": address, "code": code, **extra}
    )


async def test_otp_login_session_refresh_and_logout(mail_api: Api) -> None:
    api = mail_api
    await invite(api, "Alice@Example.com")
    r = await login(api, "alice@example.COM")
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    me = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == "alice@example.com"

    r = await api.client.post(
        "/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert r.status_code == 200
    rotated = r.json()
    assert rotated["refresh_token"] != pair["refresh_token"]

    # The rotated-away token presented again: the whole family is revoked.
    r = await api.client.post(
        "/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert r.status_code == 401
    r = await api.client.post(
        "/v1/auth/token/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert r.status_code == 401

    second = (await login(api, "alice@example.com")).json()
    r = await api.client.post("/v1/auth/logout", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 204
    r = await api.client.post(
        "/v1/auth/token/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert r.status_code == 401
    assert (
        await api.scalar("SELECT count(*) FROM audit_log WHERE action = 'auth.refresh_reuse'") == 1
    )


async def test_ending_a_session_ends_its_access_tokens_at_once(mail_api: Api) -> None:
    """Logout and refresh-token reuse left the access JWT working for its 15 minutes."""
    api = mail_api
    await invite(api, "alice@example.com")

    def bearer(pair: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {pair['access_token']}"}

    first = (await login(api, "alice@example.com")).json()
    other = (await login(api, "alice@example.com")).json()  # another device
    assert (await api.client.get("/v1/me", headers=bearer(first))).status_code == 200
    r = await api.client.post("/v1/auth/logout", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 204
    assert (await api.client.get("/v1/me", headers=bearer(first))).status_code == 401
    assert (await api.client.get("/v1/me", headers=bearer(other))).status_code == 200

    rotated = (
        await api.client.post(
            "/v1/auth/token/refresh", json={"refresh_token": other["refresh_token"]}
        )
    ).json()
    assert (await api.client.get("/v1/me", headers=bearer(rotated))).status_code == 200
    stolen = await api.client.post(
        "/v1/auth/token/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert stolen.status_code == 401  # reuse: the whole login ends, its access tokens too
    for pair in (other, rotated):
        assert (await api.client.get("/v1/me", headers=bearer(pair))).status_code == 401


async def test_codes_are_hashed_single_use_and_replaced_by_new_requests(mail_api: Api) -> None:
    api = mail_api
    await invite(api, "alice@example.com")
    await api.client.post("/v1/auth/otp/request", json={"email": "alice@example.com"})
    first = code_in(inbox(api)[-1])
    stored = await api.scalar("SELECT code_digest FROM otp_challenges")
    assert first not in stored and len(stored) == 64
    await api.client.post("/v1/auth/otp/request", json={"email": "alice@example.com"})
    second = code_in(inbox(api)[-1])
    body = {"email": "alice@example.com"}
    if first != second:
        r = await api.client.post("/v1/auth/otp/verify", json={**body, "code": first})
        assert r.status_code == 401  # the new request invalidated the old code
    r = await api.client.post("/v1/auth/otp/verify", json={**body, "code": second})
    assert r.status_code == 200
    r = await api.client.post("/v1/auth/otp/verify", json={**body, "code": second})
    assert r.status_code == 401  # single use


async def test_brute_force_is_stopped_after_five_attempts(mail_api: Api) -> None:
    api = mail_api
    await invite(api, "alice@example.com")
    await api.client.post("/v1/auth/otp/request", json={"email": "alice@example.com"})
    code = code_in(inbox(api)[-1])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        r = await api.client.post(
            "/v1/auth/otp/verify", json={"email": "alice@example.com", "code": wrong}
        )
        assert r.status_code == 401
    r = await api.client.post(
        "/v1/auth/otp/verify", json={"email": "alice@example.com", "code": code}
    )
    assert r.status_code == 401  # the right code no longer works
    failures = await api.scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'auth.login' AND outcome = 'failure'"
    )
    assert failures == 6


async def test_expired_codes_fail(mail_api: Api) -> None:
    api = mail_api
    await invite(api, "alice@example.com")
    await api.client.post("/v1/auth/otp/request", json={"email": "alice@example.com"})
    code = code_in(inbox(api)[-1])
    async with api.app.state.sessions() as session:
        from sqlalchemy import text

        await session.execute(text("UPDATE otp_challenges SET expires_at = created_at"))
        await session.commit()
    r = await api.client.post(
        "/v1/auth/otp/verify", json={"email": "alice@example.com", "code": code}
    )
    assert r.status_code == 401


async def test_unknown_emails_get_the_same_answer_and_no_mail(mail_api: Api) -> None:
    api = mail_api
    r = await api.client.post("/v1/auth/otp/request", json={"email": "nobody@example.com"})
    assert r.status_code == 202
    assert inbox(api) == []
    r = await api.client.post(
        "/v1/auth/otp/verify", json={"email": "nobody@example.com", "code": "123456"}
    )
    assert r.status_code == 401


async def test_open_signup_creates_the_account(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(
        database_url, mail_backend="file", mail_file_dir=tmp_path / "m", signup="open"
    )
    async with make_api(settings) as api:
        r = await login(api, "new@example.com")
        assert r.status_code == 200
        assert await api.scalar("SELECT count(*) FROM users WHERE email = 'new@example.com'") == 1


async def test_code_requests_are_throttled_per_email(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(
        database_url, mail_backend="file", mail_file_dir=tmp_path / "m", otp_requests_per_email=3
    )
    async with make_api(settings) as api:
        statuses = [
            (await api.client.post("/v1/auth/otp/request", json={"email": "x@example.com"}))
            for _ in range(4)
        ]
        assert [r.status_code for r in statuses] == [202, 202, 202, 429]
        assert int(statuses[-1].headers["retry-after"]) > 0


async def test_a_stranger_cannot_lock_the_owner_out(database_url: str, tmp_path: Path) -> None:
    """Five requests for an address blocked its owner for 15 minutes (renewable forever), and
    each one killed the owner's live code. Requests count per address and client; a code
    works only for the client that asked for it."""
    settings = settings_for(
        database_url,
        mail_backend="file",
        mail_file_dir=tmp_path / "m",
        trusted_proxies=["127.0.0.1/32"],  # the test client plays a proxy for two clients
    )
    owner, stranger = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "203.0.113.9"}
    async with make_api(settings) as api:
        await invite(api, "alice@example.com")
        body = {"email": "alice@example.com"}
        r = await api.client.post("/v1/auth/otp/request", json=body, headers=owner)
        assert r.status_code == 202
        code = code_in(inbox(api)[-1])
        tries = [
            (await api.client.post("/v1/auth/otp/request", json=body, headers=stranger)).status_code
            for _ in range(7)
        ]
        assert tries == [202] * 5 + [429] * 2
        for guess in ("000000", "111111", "222222", "333333", "444444"):
            r = await api.client.post(
                "/v1/auth/otp/verify", json={**body, "code": guess}, headers=stranger
            )
            assert r.status_code == 401
        # The stranger's own codes do not work for them either: they went to the owner.
        stolen = code_in(inbox(api)[-1])
        r = await api.client.post(
            "/v1/auth/otp/verify", json={**body, "code": stolen}, headers=stranger
        )
        assert r.status_code == 401
        r = await api.client.post("/v1/auth/otp/verify", json={**body, "code": code}, headers=owner)
        assert r.status_code == 200, r.text
        r = await api.client.post("/v1/auth/otp/request", json=body, headers=owner)
        assert r.status_code == 202
        # Unknown addresses answer exactly alike: nothing to enumerate.
        unknown = {"email": "nobody@example.com"}
        assert [
            (
                await api.client.post("/v1/auth/otp/request", json=unknown, headers=stranger)
            ).status_code
            for _ in range(6)
        ] == [202] * 5 + [429]


async def test_bad_login_input_is_a_422(mail_api: Api) -> None:
    for body in (
        {"email": "not-an-email"},
        {"email": "a@b.c", "extra": 1},
        {"email": "a\x00@b.c"},
    ):
        r = await mail_api.client.post("/v1/auth/otp/request", json=body)
        assert r.status_code == 422, body
    r = await mail_api.client.post("/v1/auth/otp/verify", json={"email": "a@b.c", "code": "12ab56"})
    assert r.status_code == 422
    assert await mail_api.scalar("SELECT count(*) FROM otp_challenges") == 0
