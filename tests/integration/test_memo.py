"""The memo (kit/memo.py): a bearer, or a ready version with the caller's role, seen moments
ago costs no SQL, and what ends a credential or changes a member in one process counts in
every other at once, or the others stop remembering."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import pyotp
import pytest

from bem.auth.models import Principal, User
from bem.auth.permissions import Scope
from bem.kit.db import utcnow
from bem.kit.memo import Memo
from tests.conftest import Api, make_api, settings_for
from tests.helpers import OwnRedis

STOREY = {"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey", "name": "L1"}

pytestmark = pytest.mark.postgres


async def eventually(check: Callable[[], bool], within_s: float) -> float:
    """Seconds until ``check`` holds; fails after ``within_s``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within_s, "did not happen in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def two_processes(stack: AsyncExitStack, database_url: str, **overrides: object) -> list[Api]:
    """Two apps on one database (and one Redis when given), as two API processes are."""
    prefix = f"memo{uuid.uuid4().hex[:8]}"
    settings = settings_for(database_url, redis_key_prefix=prefix, **overrides)
    return [await stack.enter_async_context(make_api(settings)) for _ in range(2)]


def memo(api: Api) -> Memo:
    return api.state.memo


async def status(api: Api, headers: dict[str, str]) -> int:
    return (await api.client.get("/v1/projects", headers=headers)).status_code


async def new_token(api: Api, owner: dict[str, str]) -> tuple[str, dict[str, str]]:
    body = {"name": "t", "scopes": ["projects:read"]}
    created = (await api.client.post("/v1/me/tokens", json=body, headers=owner)).json()
    return created["id"], {"Authorization": f"Bearer {created['token']}"}


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as value:
        yield value


async def test_a_revoked_token_ends_at_once_in_the_other_process(
    stack: AsyncExitStack, postgres_url: str, shared_redis: str
) -> None:
    a, b = await two_processes(stack, postgres_url, redis_url=shared_redis, auth_memo_s=60)
    await eventually(lambda: memo(b).usable, 5)
    alice = await a.user("alice")
    token_id, token = await new_token(a, alice)
    assert await status(b, token) == 200
    assert len(memo(b)) == 1  # b remembers it for a minute

    assert (await a.client.delete(f"/v1/me/tokens/{token_id}", headers=alice)).status_code == 204
    took = await eventually(lambda: len(memo(b)) == 0, 2)
    assert await status(b, token) == 401
    assert took < 1.0


async def test_a_process_that_cannot_hear_the_others_does_not_remember(
    stack: AsyncExitStack, postgres_url: str, own_redis: OwnRedis
) -> None:
    a, b = await two_processes(stack, postgres_url, redis_url=own_redis.url, auth_memo_s=60)
    await eventually(lambda: memo(b).usable, 5)
    alice = await a.user("alice")
    token_id, token = await new_token(a, alice)
    assert await status(b, token) == 200

    own_redis.stop()
    await eventually(lambda: not memo(b).usable, 6)
    await a.client.delete(f"/v1/me/tokens/{token_id}", headers=alice)  # nobody hears
    assert await status(b, token) == 401  # b asked the database

    own_redis.start()
    await eventually(lambda: memo(b).usable, 6)
    assert await status(b, alice) == 200
    assert len(memo(b)) == 1


async def test_totp_changes_read_the_user_again_whatever_a_memo_holds(
    stack: AsyncExitStack, postgres_url: str
) -> None:
    """Without Redis nobody tells b that a enrolled alice: its memo's copy of her has no
    pending secret, yet confirming through b works."""
    a, b = await two_processes(stack, postgres_url, auth_memo_s=60)
    alice = await a.user("alice")
    assert await status(b, alice) == 200  # b remembers alice, not yet enrolling
    enrollment = (await a.client.post("/v1/me/totp", headers=alice)).json()
    code = pyotp.TOTP(enrollment["secret"]).now()
    r = await b.client.post("/v1/me/totp/confirm", json={"code": code}, headers=alice)
    assert r.status_code == 200, r.text
    assert (await b.client.get("/v1/me", headers=alice)).json()["totp_enabled"] is True


async def test_a_removed_member_loses_the_version_at_once_in_the_other_process(
    stack: AsyncExitStack, postgres_url: str, shared_redis: str
) -> None:
    a, b = await two_processes(stack, postgres_url, redis_url=shared_redis, auth_memo_s=60)
    await eventually(lambda: memo(b).usable, 5)
    owner, bob = await a.user("alice"), await a.user("bob")
    pid, mid = await a.model(owner)
    vid = await a.upload(owner, mid, [STOREY])
    bob_path = f"/v1/projects/{pid}/members/{a.users['bob'].id}"
    r = await a.client.put(bob_path, json={"role": "viewer"}, headers=owner)
    assert r.status_code in (200, 201), r.text
    page = f"/v1/versions/{vid}/elements"
    for _ in range(50):  # until b remembers bob's role (a forget heard meanwhile voids a put)
        assert (await b.client.get(page, headers=bob)).status_code == 200
        if any(k.startswith("in:") for k in memo(b)._entries):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("b never remembered the version")

    r = await a.client.delete(bob_path, headers=owner)
    assert r.status_code == 204, r.text
    await eventually(lambda: not any(k.startswith("in:") for k in memo(b)._entries), 2)
    assert (await b.client.get(page, headers=bob)).status_code == 404


def principal(expires_in_s: float | None = None) -> Principal:
    user = User(id=uuid.uuid4(), email="a@example.com", name="a", is_admin=False)
    expires = utcnow() + timedelta(seconds=expires_in_s) if expires_in_s is not None else None
    return Principal(user, frozenset({Scope.projects_read}), "api_token", expires_at=expires)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_no_longer_than_the_memo_or_the_ttl_it_was_given() -> None:
    clock = Clock()
    kept = Memo(5, clock=clock)
    kept.put("long", 1, ["user:a"], kept.epoch())
    kept.put("short", 2, ["user:a"], kept.epoch(), ttl_s=1)
    kept.put("expired", 3, ["user:a"], kept.epoch(), ttl_s=-1)
    assert [k for k in ("long", "short", "expired") if kept.get(k)] == ["long", "short"]
    clock.now = 2
    assert [k for k in ("long", "short") if kept.get(k)] == ["long"]
    clock.now = 5
    assert kept.get("long") is None


def test_forgetting_a_topic_forgets_its_entries_only() -> None:
    kept = Memo(5)
    kept.put("a", 1, ["user:a", "project:p"], kept.epoch())
    kept.put("b", 2, ["user:b"], kept.epoch())
    kept.forget({"project:p"})
    assert kept.get("a") is None and kept.get("b") == 2


def test_a_lookup_that_began_before_a_forget_is_not_kept() -> None:
    kept = Memo(5)
    before = kept.epoch()
    kept.forget({"user:x"})  # a revocation committed while the lookup ran
    kept.put("key", 1, ["user:y"], before)
    assert len(kept) == 0


def test_the_memo_is_bounded() -> None:
    kept = Memo(5, max_entries=3)
    for n in range(5):
        kept.put(str(n), n, [], kept.epoch())
    assert list(kept._entries) == ["2", "3", "4"]
