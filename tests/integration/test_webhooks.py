"""Webhooks: signed deliveries to a receiver on 127.0.0.1, retries with backoff, the
delivery log, subscriptions by kind, refused destinations; on both databases."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from bem.events import service
from bem.live import tasks
from tests.conftest import Api, make_api, settings_for
from tests.integration.test_live import storey
from tests.integration.test_metrics import sample


@dataclass
class Receiver:
    """A tiny HTTP server that records each POST and answers with the next scripted status
    (200 once the script is used up)."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def until(self, n: int, timeout_s: float = 15) -> None:
        """Wait until ``n`` requests have arrived."""
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(lambda: len(self.received) >= n)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {
            k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        async with self.changed:
            self.received.append({"line": lines[0], "headers": headers, "body": body})
            self.changed.notify_all()
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


@pytest.fixture
async def hooked(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setattr(tasks, "IDLE_S", 0.05)
    settings = settings_for(
        database_url,
        webhook_allow_private=True,
        webhook_retry_base_s=0.1,
        webhook_max_attempts=3,
        webhook_timeout_s=2,
    )
    async with make_api(settings) as api:
        yield api


async def deliveries(
    api: Api, headers: dict[str, str], pid: str, hook: str
) -> list[dict[str, Any]]:
    r = await api.client.get(f"/v1/projects/{pid}/webhooks/{hook}/deliveries", headers=headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def settled(
    api: Api, headers: dict[str, str], pid: str, hook: str, n: int
) -> list[dict[str, Any]]:
    """The delivery log once ``n`` deliveries are no longer pending."""
    for _ in range(200):
        found = await deliveries(api, headers, pid, hook)
        if len(found) >= n and all(d["status"] != "pending" for d in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries did not settle: {found}")


async def test_a_version_is_delivered_signed_and_logged(hooked: Api, receiver: Receiver) -> None:
    api = hooked
    owner = await api.user("alice")
    pid, mid = await api.model(owner)
    r = await api.client.post(
        f"/v1/projects/{pid}/webhooks",
        json={"url": receiver.url, "kinds": ["version.created"]},
        headers=owner,
    )
    assert r.status_code == 201, r.text
    hook = r.json()
    assert len(hook["secret"]) == 64 and hook["kinds"] == ["version.created"]
    listed = (await api.client.get(f"/v1/projects/{pid}/webhooks", headers=owner)).json()
    assert [h["id"] for h in listed["items"]] == [hook["id"]]
    assert "secret" not in listed["items"][0]

    vid = await api.upload(owner, mid, storey())
    (delivery,) = await settled(api, owner, pid, hook["id"], 1)
    assert delivery["status"] == "succeeded" and delivery["response_status"] == 200
    assert delivery["attempts"] == 1 and delivery["delivered_at"] is not None

    (request,) = receiver.received
    assert request["line"] == "POST /hook HTTP/1.1"
    body, headers = request["body"], request["headers"]
    event = orjson.loads(body)
    assert event["kind"] == "version.created" and event["data"]["version_id"] == vid
    assert event["id"] == delivery["event_id"]
    assert headers["bem-event"] == "version.created"
    assert headers["bem-delivery"] == str(delivery["id"])
    stamp, mac = (part.split("=", 1)[1] for part in headers["bem-signature"].split(","))
    assert abs(int(stamp) - time.time()) < 60
    expected = hmac.new(hook["secret"].encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(mac, expected.hexdigest())
    # model.created happened before the webhook existed; nothing else matched its kinds.
    assert len(receiver.received) == 1

    text = (await api.client.get("/metrics")).text
    assert sample(text, "bem_webhook_deliveries_total", outcome="succeeded") == 1
    root = await api.user("root", admin=True)
    detail = (await api.client.get("/health", headers=root)).json()
    assert detail["live"]["webhooks"]["pending"] == 0


async def test_failures_are_retried_with_backoff_then_given_up(
    hooked: Api, receiver: Receiver
) -> None:
    api = hooked
    owner = await api.user("alice")
    pid, mid = await api.model(owner)
    hook = (
        await api.client.post(
            f"/v1/projects/{pid}/webhooks", json={"url": receiver.url}, headers=owner
        )
    ).json()["id"]
    receiver.statuses = [500, 503]  # then 200
    await api.upload(owner, mid, storey())
    (ok,) = await settled(api, owner, pid, hook, 1)
    assert ok["status"] == "succeeded" and ok["attempts"] == 3
    assert len(receiver.received) == 3
    assert len({r["headers"]["bem-delivery"] for r in receiver.received}) == 1  # one delivery

    receiver.statuses = [500, 500, 500]
    await api.upload(owner, mid, storey("L2"))
    newest = (await settled(api, owner, pid, hook, 2))[0]
    assert newest["status"] == "failed" and newest["attempts"] == 3
    assert newest["response_status"] == 500 and newest["error"] == "HTTP 500"

    text = (await api.client.get("/metrics")).text
    assert sample(text, "bem_webhook_deliveries_total", outcome="retried") == 4
    assert sample(text, "bem_webhook_deliveries_total", outcome="failed") == 1
    assert sample(text, "bem_webhook_deliveries_total", outcome="succeeded") == 1


async def test_an_unreachable_receiver_is_recorded_and_deleting_stops_deliveries(
    hooked: Api, receiver: Receiver
) -> None:
    api = hooked
    owner = await api.user("alice")
    pid, mid = await api.model(owner)
    dead = receiver.url.replace(str(receiver.port), "9")  # the discard port: refused
    hook = (
        await api.client.post(f"/v1/projects/{pid}/webhooks", json={"url": dead}, headers=owner)
    ).json()["id"]
    await api.upload(owner, mid, storey())
    (failed,) = await settled(api, owner, pid, hook, 1)
    assert failed["status"] == "failed" and failed["response_status"] is None
    assert failed["error"].startswith("ConnectError")

    r = await api.client.delete(f"/v1/projects/{pid}/webhooks/{hook}", headers=owner)
    assert r.status_code == 204
    await api.upload(owner, mid, storey("L2"))
    assert await api.scalar("SELECT count(*) FROM webhook_deliveries") == 0
    gone = await api.client.get(f"/v1/projects/{pid}/webhooks/{hook}/deliveries", headers=owner)
    assert gone.status_code == 404
    action = await api.scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'webhook.%'")
    assert action == 2


async def test_bad_webhooks_are_refused_and_change_nothing(sqlite_url: str) -> None:
    async with make_api(settings_for(sqlite_url, webhooks_per_project=1)) as api:
        owner = await api.user("alice")
        pid, _ = await api.model(owner)
        url = f"/v1/projects/{pid}/webhooks"
        for body in (
            {"url": "ftp://example.com/x"},
            {"url": "not a url"},
            {"url": "https://example.com/x", "kinds": ["nope"]},
            {"url": "https://example.com/x", "extra": 1},
        ):
            r = await api.client.post(url, json=body, headers=owner)
            assert r.status_code == 422, (body, r.text)
        for private in (
            "http://127.0.0.1:8000/x",
            "http://10.1.2.3/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest",
        ):
            r = await api.client.post(url, json={"url": private}, headers=owner)
            assert r.status_code == 422 and "private or local" in r.json()["detail"], private
        assert await api.scalar("SELECT count(*) FROM webhooks") == 0

    async with make_api(
        settings_for(sqlite_url, webhooks_per_project=1, webhook_allow_private=True)
    ) as api:
        owner = await api.user("bob")
        pid, _ = await api.model(owner)
        url = f"/v1/projects/{pid}/webhooks"
        assert (
            await api.client.post(url, json={"url": "http://127.0.0.1:9/a"}, headers=owner)
        ).status_code == 201
        r = await api.client.post(url, json={"url": "http://127.0.0.1:9/b"}, headers=owner)
        assert r.status_code == 409
        editor_token = await api.api_token("bob", ["projects:read"])
        assert (await api.client.get(url, headers=editor_token)).status_code == 403


async def _hook(api: Api, owner: dict[str, str], name: str, url: str) -> tuple[str, str, str]:
    """A project with a model and a webhook to ``url``: (project, model, webhook) ids."""
    pid, mid = await api.model(owner, name)
    r = await api.client.post(f"/v1/projects/{pid}/webhooks", json={"url": url}, headers=owner)
    assert r.status_code == 201, r.text
    return pid, mid, r.json()["id"]


@dataclass
class Hostile:
    """A receiver that reads the request, then answers badly: ``trickle`` sends headers and
    one byte every ``pause_s``; ``flood`` sends an endless body as fast as it can."""

    mode: str
    pause_s: float = 0.5
    connections: int = 0
    written: int = 0  # body bytes the receiver managed to send
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 500000000\r\n\r\n")
        chunk = b"x" * (1 if self.mode == "trickle" else 1024 * 1024)
        try:
            for _ in range(500):
                writer.write(chunk)
                await writer.drain()
                self.written += len(chunk)
                if self.mode == "trickle":
                    await asyncio.sleep(self.pause_s)
        except (ConnectionError, OSError):
            pass  # the sender hung up: what this receiver is here to prove
        finally:
            self.closed.set()
            writer.close()


@asynccontextmanager
async def hostile(mode: str) -> AsyncIterator[tuple[Hostile, str]]:
    found = Hostile(mode)
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield found, f"http://127.0.0.1:{port}/hook"
        server.close()


async def test_a_slow_receiver_delays_no_other_project(hooked: Api, receiver: Receiver) -> None:
    """Headers, then a byte every 0.5 s: each read is quick, so only a deadline for the
    whole attempt (2 s here) ends it; meanwhile another project's delivery goes out."""
    api = hooked
    owner = await api.user("alice")
    async with hostile("trickle") as (slow, slow_url):
        _, slow_model, slow_hook = await _hook(api, owner, "Slow", slow_url)
        _, fast_model, _ = await _hook(api, owner, "Fast", receiver.url)
        await api.upload(owner, slow_model, storey())
        for _ in range(100):
            if slow.connections:
                break
            await asyncio.sleep(0.05)
        started = time.monotonic()
        await api.upload(owner, fast_model, storey())
        await receiver.until(1)  # the version of "Fast"
        assert time.monotonic() - started < 1.5  # not behind the slow one
        await asyncio.wait_for(slow.closed.wait(), 5)
        first = (await settled_once(api, owner, "Slow", slow_hook))[-1]
        assert first["error"].startswith("Timeout") and first["attempts"] >= 1
        assert slow.written < 20  # bytes trickled before the deadline hung up


async def settled_once(api: Api, owner: dict[str, str], project: str, hook: str) -> list[Any]:
    """The delivery log of a project's webhook once its oldest attempt has an answer."""
    pid = next(
        p["id"]
        for p in (await api.client.get("/v1/projects", headers=owner)).json()["items"]
        if p["name"] == project
    )
    for _ in range(100):
        found = await deliveries(api, owner, pid, hook)
        if found and found[-1]["error"] is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no attempt was recorded: {found}")


async def test_a_huge_answer_is_not_read(hooked: Api) -> None:
    api = hooked
    owner = await api.user("alice")
    async with hostile("flood") as (flood, url):
        pid, _, hook = await _hook(api, owner, "Flood", url)
        await api.client.post(f"/v1/projects/{pid}/models", json={"name": "M2"}, headers=owner)
        (delivery,) = await settled(api, owner, pid, hook, 1)
        assert delivery["status"] == "succeeded" and delivery["response_status"] == 200
        await asyncio.wait_for(flood.closed.wait(), 5)
        # Socket buffers take a few MiB before the receiver notices; not the 500 MB it offered.
        assert flood.written < 16 * 1024 * 1024, flood.written


async def test_a_delivery_connects_to_the_address_that_was_checked(
    sqlite_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers a public address to the checks and an internal one
    afterwards. The connection must go where the check said, never to the second answer."""
    internal = Receiver()
    try:
        server = await asyncio.start_server(internal.handle, "127.0.0.2", receiver.port)
    except OSError:
        pytest.skip(f"port {receiver.port} is taken on 127.0.0.2")
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "127.0.0.1"])  # the webhook's creation, the send's check

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.example.test":
            return real(host, port, *args, **kwargs)
        address = next(answers, "127.0.0.2")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 80)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    # In this test 127.0.0.1 stands for a public address and 127.0.0.2 for an internal one.
    monkeypatch.setattr(service, "_forbidden_address", lambda address: address == "127.0.0.2")
    monkeypatch.setattr(tasks, "IDLE_S", 0.05)
    async with server, make_api(settings_for(sqlite_url)) as api:
        owner = await api.user("alice")
        url = f"http://hooks.example.test:{receiver.port}/hook"
        pid, _, hook = await _hook(api, owner, "P", url)
        await api.client.post(f"/v1/projects/{pid}/models", json={"name": "M2"}, headers=owner)
        await settled(api, owner, pid, hook, 1)
        assert internal.received == []
        assert receiver.received[0]["headers"]["host"] == f"hooks.example.test:{receiver.port}"
