"""TOTP as a second factor: enroll, confirm, required at login, replay refused, recovery
codes single use, disable with a fresh code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest

from bem.auth import service
from tests.conftest import make_api, settings_for
from tests.integration.test_auth_login import code_in, inbox, invite


class Clock:
    """Moves the service's notion of now, so TOTP steps can pass without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: int = 30) -> None:
        self.now += timedelta(seconds=seconds)


async def test_totp_second_factor(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(service, "utcnow", clock)
    settings = settings_for(
        database_url, mail_backend="file", mail_file_dir=tmp_path / "m", otp_requests_per_email=50
    )
    async with make_api(settings) as api:
        await invite(api, "alice@example.com")

        async def otp() -> str:
            await api.client.post("/v1/auth/otp/request", json={"email": "alice@example.com"})
            return code_in(inbox(api)[-1])

        async def verify(**extra: str) -> int:
            body = {"email": "alice@example.com", "code": await otp(), **extra}
            return (await api.client.post("/v1/auth/otp/verify", json=body)).status_code

        body = {"email": "alice@example.com", "code": await otp()}
        session = (await api.client.post("/v1/auth/otp/verify", json=body)).json()
        headers = {"Authorization": f"Bearer {session['access_token']}"}

        r = await api.client.post("/v1/me/totp", headers=headers)
        assert r.status_code == 200
        enrollment = r.json()
        assert enrollment["otpauth_uri"].startswith("otpauth://totp/")
        assert enrollment["qr_svg"].lstrip().startswith("<svg")
        stored = await api.scalar(
            "SELECT totp_pending_secret FROM users WHERE email='alice@example.com'"
        )
        assert enrollment["secret"] not in stored  # encrypted at rest
        totp = pyotp.TOTP(enrollment["secret"])

        r = await api.client.post("/v1/me/totp/confirm", json={"code": "000000"}, headers=headers)
        assert r.status_code == 400
        now = clock.now.timestamp()
        r = await api.client.post(
            "/v1/me/totp/confirm", json={"code": totp.at(now)}, headers=headers
        )
        assert r.status_code == 200
        recovery = r.json()["recovery_codes"]
        assert len(recovery) == 10
        assert (await api.client.get("/v1/me", headers=headers)).json()["totp_enabled"] is True

        # Login now needs the second factor; the confirm code cannot be replayed.
        r_status = await verify()
        assert r_status == 401
        assert await verify(totp_code=totp.at(now)) == 401
        clock.tick()
        fresh = totp.at(clock.now.timestamp())
        assert await verify(totp_code=fresh) == 200
        assert await verify(totp_code=fresh) == 401  # the same code twice: replay

        assert await verify(recovery_code=recovery[0]) == 200
        assert await verify(recovery_code=recovery[0]) == 401  # single use
        assert await verify(recovery_code="nope-nope") == 401

        clock.tick()
        r = await api.client.post("/v1/me/totp/disable", json={"code": fresh}, headers=headers)
        assert r.status_code == 400  # not fresh
        r = await api.client.post(
            "/v1/me/totp/disable", json={"code": totp.at(clock.now.timestamp())}, headers=headers
        )
        assert r.status_code == 204
        assert await verify() == 200
        actions = await api.scalar(
            "SELECT count(*) FROM audit_log "
            "WHERE action IN ('totp.enroll', 'totp.enable', 'totp.disable')"
        )
        assert actions >= 3
