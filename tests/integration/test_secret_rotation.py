"""Rotating BEM_SECRET_KEY: with the old key in BEM_SECRET_KEY_PREVIOUS everything it sealed
or keyed still works (TOTP secrets, webhook signing secrets, recovery codes);
``bem rotate-secret-key`` seals the stored secrets again with the new key, after
which the old key is no longer needed for them."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import orjson
import pyotp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bem.auth import service
from bem.config import Settings
from bem.events.models import Webhook
from bem.events.service import webhook_box
from tests.conftest import Api, make_api, settings_for
from tests.helpers import bem, bem_env
from tests.integration.test_auth_login import code_in, inbox, invite
from tests.integration.test_auth_totp import Clock

OLD, NEW = "old-secret-key-0123456789abcdef", "new-secret-key-fedcba9876543210"
ALICE = "alice@example.com"


async def sign_in(api: Api, **second_factor: str) -> int:
    await api.client.post("/v1/auth/otp/request", json={"email": ALICE})
    body = {"email": ALICE, "code": code_in(inbox(api)[-1]), **second_factor}
    return (await api.client.post("/v1/auth/otp/verify", json=body)).status_code


async def enrolled(settings: Settings) -> tuple[pyotp.TOTP, list[str], str, str]:
    """Alice with TOTP (its secret, recovery codes) and a project webhook (its id, secret),
    all sealed with ``settings``' key."""
    async with make_api(settings) as api:
        await invite(api, ALICE)
        await api.client.post("/v1/auth/otp/request", json={"email": ALICE})
        body = {"email": ALICE, "code": code_in(inbox(api)[-1])}
        token = (await api.client.post("/v1/auth/otp/verify", json=body)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        totp = pyotp.TOTP((await api.client.post("/v1/me/totp", headers=headers)).json()["secret"])
        confirm = {"code": totp.now()}
        codes = (await api.client.post("/v1/me/totp/confirm", json=confirm, headers=headers)).json()
        pid = (await api.client.post("/v1/projects", json={"name": "P"}, headers=headers)).json()
        hook = await api.client.post(
            f"/v1/projects/{pid['id']}/webhooks",
            json={"url": "http://127.0.0.1:9/h"},
            headers=headers,
        )
        return totp, codes["recovery_codes"], hook.json()["id"], hook.json()["secret"]


async def webhook_secret(api: Api, hook_id: str) -> str | None:
    async with api.state.sessions() as session:
        sealed = await session.scalar(select(Webhook.secret).where(Webhook.id == UUID(hook_id)))
    assert sealed is not None
    return webhook_box(api.settings).open(sealed)


async def test_a_rotated_secret_key_keeps_what_the_old_one_sealed(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(service, "utcnow", clock)

    def keyed(key: str, *previous: str) -> Settings:
        return settings_for(
            sqlite_url,
            secret_key=SecretStr(key),
            secret_key_previous=[SecretStr(p) for p in previous],
            mail_backend="file",
            mail_file_dir=tmp_path / "mail",
            otp_requests_per_email=50,
            webhook_allow_private=True,
        )

    totp, recovery, hook_id, secret = await enrolled(keyed(OLD))

    async with make_api(keyed(NEW)) as api:  # the old key dropped at once: sealed data lost
        clock.tick()
        assert await sign_in(api, totp_code=totp.at(clock.now)) == 401
        assert await webhook_secret(api, hook_id) is None

    async with make_api(keyed(NEW, OLD)) as api:  # rotated: everything still works
        clock.tick()
        assert await sign_in(api, totp_code=totp.at(clock.now)) == 200
        assert await sign_in(api, recovery_code=recovery[0]) == 200
        assert await webhook_secret(api, hook_id) == secret

    env = bem_env(
        {
            "BEM_DATABASE_URL": sqlite_url,
            "BEM_SECRET_KEY": NEW,
            "BEM_SECRET_KEY_PREVIOUS": orjson.dumps([OLD]).decode(),
        }
    )
    done = bem(["rotate-secret-key"], env, tmp_path)
    assert orjson.loads(done.stdout) == {"totp_secrets": 1, "webhook_secrets": 1, "unreadable": 0}

    async with make_api(keyed(NEW)) as api:  # sealed again: the old key is not needed
        clock.tick()
        assert await sign_in(api, totp_code=totp.at(clock.now)) == 200
        assert await webhook_secret(api, hook_id) == secret

    stranger = {
        **env,
        "BEM_SECRET_KEY": "a-key-that-sealed-nothing",
        "BEM_SECRET_KEY_PREVIOUS": "[]",
    }
    refused = bem(["rotate-secret-key"], stranger, tmp_path, check=False)
    assert refused.returncode == 1 and "add the key that sealed them" in refused.stderr
