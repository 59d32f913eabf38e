"""Credentials that must not work, and the ones that must: JWT attacks, API token scopes,
project binding, revocation and expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bem.auth.sessions import issue_access_token, key_set
from bem.config import Settings
from tests.conftest import Api, make_api, settings_for


def claims(settings: Settings, sub: uuid.UUID, **override: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(sub),
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    return {**base, **override}


def b64(data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def hs256_by_hand(payload: dict[str, object], key: bytes, kid: str) -> str:
    """HS256 signed with any bytes (PyJWT refuses PEM keys, an attacker would not)."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def test_forged_and_malformed_jwts_are_401(api: Api) -> None:
    await api.user("alice")
    user_id = api.users["alice"].id
    s = api.settings
    keys = key_set(s)
    good_key = keys.keys[keys.active]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"kid": keys.active}
    bad_tokens = {
        "forged signature": jwt.encode(claims(s, user_id), b"x" * 32, "HS256", headers=header),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': keys.active})}."
        f"{b64(claims(s, user_id))}.",
        "RS256 with an attacker key": jwt.encode(
            claims(s, user_id), rsa_key, "RS256", headers=header
        ),
        "HS256 keyed with a public key": hs256_by_hand(claims(s, user_id), public_pem, keys.active),
        "expired": jwt.encode(
            claims(s, user_id, exp=int(time.time()) - 120), good_key, "HS256", headers=header
        ),
        "wrong audience": jwt.encode(
            claims(s, user_id, aud="other"), good_key, "HS256", headers=header
        ),
        "wrong issuer": jwt.encode(
            claims(s, user_id, iss="evil"), good_key, "HS256", headers=header
        ),
        "unknown kid": jwt.encode(claims(s, user_id), good_key, "HS256", headers={"kid": "k9"}),
        "no jti": jwt.encode(
            {k: v for k, v in claims(s, user_id).items() if k != "jti"},
            good_key,
            "HS256",
            headers=header,
        ),
        "unknown user": jwt.encode(claims(s, uuid.uuid4()), good_key, "HS256", headers=header),
        "garbage": "not.a.jwt",
    }
    for label, token in bad_tokens.items():
        r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, label
    good = hs256_by_hand(claims(s, user_id), good_key, keys.active)  # the helper is sound
    assert (
        await api.client.get("/v1/me", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200


async def test_key_rotation_by_kid(sqlite_url: str) -> None:
    old = settings_for(sqlite_url, jwt_keys={"k1": "a" * 40})
    rotated = settings_for(
        sqlite_url, jwt_keys={"k1": "a" * 40, "k2": "b" * 40}, jwt_active_kid="k2"
    )
    retired = settings_for(sqlite_url, jwt_keys={"k2": "b" * 40})
    async with make_api(rotated) as api:
        await api.user("alice")
        uid = api.users["alice"].id
        now = datetime.now(UTC)
        by_old = issue_access_token(old, uid, now)
        by_new = issue_access_token(rotated, uid, now)
        assert jwt.get_unverified_header(by_new)["kid"] == "k2"
        for token in (by_old, by_new):
            r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
    async with make_api(retired) as api:
        r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {by_old}"})
        assert r.status_code == 401
        r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {by_new}"})
        assert r.status_code == 200


async def test_personal_api_tokens_lifecycle(api: Api) -> None:
    alice = await api.user("alice")
    r = await api.client.post(
        "/v1/me/tokens", json={"name": "ci", "scopes": ["projects:read"]}, headers=alice
    )
    assert r.status_code == 201
    created = r.json()
    secret = created["token"]
    assert secret.startswith("bem_pat_") and created["display_prefix"] == secret[:12]
    assert await api.scalar("SELECT count(*) FROM api_tokens WHERE digest = 'x'") == 0
    digest = await api.scalar("SELECT digest FROM api_tokens WHERE name = 'ci'")
    assert secret not in digest

    listed = (await api.client.get("/v1/me/tokens", headers=alice)).json()
    assert [t["name"] for t in listed] == ["ci"] and "token" not in listed[0]
    token_headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.client.get("/v1/projects", headers=token_headers)).status_code == 200
    r = await api.client.post("/v1/projects", json={"name": "P"}, headers=token_headers)
    assert r.status_code == 403 and "projects:write" in r.json()["detail"]
    r = await api.client.post(
        "/v1/me/tokens", json={"name": "x", "scopes": ["admin"]}, headers=alice
    )
    assert r.status_code == 403  # only admins mint admin tokens

    assert (
        await api.client.delete(f"/v1/me/tokens/{created['id']}", headers=alice)
    ).status_code == 204
    assert (await api.client.get("/v1/projects", headers=token_headers)).status_code == 401
    assert (
        await api.client.delete(f"/v1/me/tokens/{created['id']}", headers=alice)
    ).status_code == 404


async def test_expired_api_tokens_are_401(api: Api) -> None:
    alice = await api.user("alice")
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    r = await api.client.post(
        "/v1/me/tokens",
        json={"name": "short", "scopes": ["projects:read"], "expires_at": soon},
        headers=alice,
    )
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    async with api.app.state.sessions() as session:
        from sqlalchemy import text

        await session.execute(text("UPDATE api_tokens SET expires_at = created_at"))
        await session.commit()
    assert (await api.client.get("/v1/projects", headers=headers)).status_code == 401
    r = await api.client.post(
        "/v1/me/tokens",
        json={"name": "naive", "scopes": ["projects:read"], "expires_at": "2030-01-01T00:00:00"},
        headers=alice,
    )
    assert r.status_code == 422


async def test_project_bound_tokens_see_only_their_project(api: Api) -> None:
    alice = await api.user("alice")
    a = (await api.client.post("/v1/projects", json={"name": "A"}, headers=alice)).json()["id"]
    b = (await api.client.post("/v1/projects", json={"name": "B"}, headers=alice)).json()["id"]
    bound = await api.api_token("alice", ["projects:read"], project_id=uuid.UUID(a))
    assert (await api.client.get(f"/v1/projects/{a}", headers=bound)).status_code == 200
    assert (await api.client.get(f"/v1/projects/{b}", headers=bound)).status_code == 404
    listed = (await api.client.get("/v1/projects", headers=bound)).json()["items"]
    assert [p["id"] for p in listed] == [a]


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer ", "Token abc", "Bearer bem_pat_" + "x" * 200]
)
async def test_malformed_authorization_headers(api: Api, header: str) -> None:
    r = await api.client.get("/v1/me", headers={"Authorization": header})
    assert r.status_code == 401


async def test_a_token_never_mints_one_that_reaches_further(api: Api) -> None:
    """The probe's escalations: a project-bound token with only `account` minted an unbound
    `projects:write` token that uploaded elsewhere; a bound admin token minted an unbound
    admin token and created an admin user."""
    owner = await api.user("alice")
    here = (await api.client.post("/v1/projects", json={"name": "A"}, headers=owner)).json()
    there = (await api.client.post("/v1/projects", json={"name": "B"}, headers=owner)).json()
    model = await api.client.post(
        f"/v1/projects/{there['id']}/models", json={"name": "M"}, headers=owner
    )
    bound = await api.api_token("alice", ["account"], project_id=uuid.UUID(here["id"]))

    def mint(headers: dict[str, str], **body: object) -> object:
        return api.client.post("/v1/me/tokens", json={"name": "derived", **body}, headers=headers)

    r = await mint(bound, scopes=["projects:write"])
    assert r.status_code == 403 and "projects:write" in r.json()["detail"]
    r = await mint(bound, scopes=["account"], project_id=there["id"])
    assert r.status_code == 403
    r = await mint(bound, scopes=["account"])  # the binding is inherited
    assert r.status_code == 201 and r.json()["project_id"] == here["id"]

    # Even a broad token bound to project A cannot write into B, nor create projects.
    writer = await api.api_token(
        "alice", ["projects:write", "models:write"], project_id=uuid.UUID(here["id"])
    )
    upload = await api.client.post(
        f"/v1/models/{model.json()['id']}/versions",
        content=b'{"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey"}\n',
        headers={**writer, "content-type": "application/x-ndjson"},
    )
    assert upload.status_code == 404
    assert (
        await api.client.post("/v1/projects", json={"name": "C"}, headers=writer)
    ).status_code == 403

    await api.user("root", admin=True)
    bound_admin = await api.api_token("root", ["admin"], project_id=uuid.UUID(here["id"]))
    r = await mint(bound_admin, scopes=["admin"])
    assert r.status_code == 201 and r.json()["project_id"] == here["id"]
    invite = {"email": "mallory@example.com", "name": "M", "is_admin": True}
    for headers in (bound_admin, {"Authorization": f"Bearer {r.json()['token']}"}):
        denied = await api.client.post("/v1/admin/users", json=invite, headers=headers)
        assert denied.status_code == 403, denied.text
        assert (await api.client.get("/health", headers=headers)).status_code == 403


async def test_a_derived_token_expires_no_later_than_its_creator(api: Api) -> None:
    owner = await api.user("alice")
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    r = await api.client.post(
        "/v1/me/tokens",
        json={"name": "t", "scopes": ["account"], "expires_at": soon},
        headers=owner,
    )
    short = {"Authorization": f"Bearer {r.json()['token']}"}
    body = {"name": "d", "scopes": ["account"]}
    r = await api.client.post("/v1/me/tokens", json={**body, "expires_at": later}, headers=short)
    assert r.status_code == 403
    r = await api.client.post("/v1/me/tokens", json=body, headers=short)
    assert r.status_code == 201
    assert datetime.fromisoformat(r.json()["expires_at"]) <= datetime.fromisoformat(soon)
