"""The change feed: events written with the changes they report, listed, streamed over
Server-Sent Events and WebSockets against a real uvicorn server, on both databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from sqlalchemy import text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bem.app import create_app
from bem.events import service as live
from bem.live import hub as hub_module
from bem.live.hub import Ended, Heartbeat
from tests.conftest import Api, settings_for
from tests.helpers import free_port
from tests.integration.test_imports import imported
from tests.integration.test_metrics import sample

STOREY = "0000000000000000000S01"


@asynccontextmanager
async def served(database_url: str, **overrides: Any) -> AsyncIterator[Api]:
    """The app on a real uvicorn server (streams and WebSockets need one); ``client`` talks
    to it over TCP."""
    settings = settings_for(
        database_url,
        feed_poll_s=0.05,
        feed_heartbeat_s=0.5,
        webhook_allow_private=True,
        **overrides,
    )
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield Api(app=app, client=client, settings=settings)
    finally:
        server.should_exit = True
        await task


def storey(name: str = "L1") -> list[dict[str, Any]]:
    """A one-storey model, named ``name``."""
    return [{"global_id": STOREY, "ifc_class": "IfcBuildingStorey", "name": name}]


async def sse_frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Server-Sent Events frames as field dicts (a comment becomes ``{"comment": ...}``)."""
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            key, _, value = line.partition(":")
            frame[key] = value.removeprefix(" ")


async def next_events(frames: AsyncIterator[dict[str, str]], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for frame in frames:
            if "data" in frame and frame.get("event") != "end":
                out.append({**orjson.loads(frame["data"]), "sse_id": frame["id"]})
                if len(out) == n:
                    return out
    raise AssertionError(f"the stream ended after {out}")


def ws_url(api: Api, path: str) -> str:
    return str(api.client.base_url).replace("http://", "ws://") + path


async def test_changes_write_events_in_order_and_the_list_pages_through_them(
    database_url: str,
) -> None:
    async with served(database_url) as api:
        owner = await api.user("alice")
        pid, mid = await api.model(owner)
        vid = await api.upload(owner, mid, storey())
        job = await imported(
            api,
            owner,
            mid,
            "s.ndjson",
            orjson.dumps({"global_id": STOREY, "ifc_class": "IfcBuildingStorey", "name": "L2"}),
        )
        failed = await imported(api, owner, mid, "bad.ndjson", b"{not json")
        assert failed["status"] == "failed"

        r = await api.client.get(f"/v1/projects/{pid}/events", headers=owner)
        assert r.status_code == 200, r.text
        events = r.json()["items"]
        kinds = [e["kind"] for e in events]
        assert kinds == [
            "model.created",
            "version.created",
            "version.created",
            "job.succeeded",
            "job.failed",
        ]
        ids = [e["id"] for e in events]
        assert ids == sorted(ids) and r.json()["last_id"] == ids[-1]
        assert all(e["project_id"] == pid and e["model_id"] == mid for e in events)
        assert events[1]["data"]["version_id"] == vid and events[1]["data"]["seq"] == 1
        assert events[3]["data"] == {
            "job_id": job["id"],
            "kind": "import",
            "version_id": job["version_id"],
        }
        assert events[4]["data"]["error"]["type"] == failed["error"]["type"]

        page = await api.client.get(
            f"/v1/projects/{pid}/events", params={"after": ids[1], "limit": 2}, headers=owner
        )
        assert [e["id"] for e in page.json()["items"]] == ids[2:4]
        assert page.json()["last_id"] == ids[3]
        empty = await api.client.get(
            f"/v1/projects/{pid}/events", params={"after": ids[-1]}, headers=owner
        )
        assert empty.json() == {"items": [], "last_id": ids[-1]}
        bad = await api.client.get(f"/v1/projects/{pid}/events?after=-1", headers=owner)
        assert bad.status_code == 422

        text_ = (await api.client.get("/metrics")).text
        assert sample(text_, "bem_events_total", kind="version.created") == 2
        assert sample(text_, "bem_events_total", kind="job.failed") == 1


async def test_a_rolled_back_change_writes_no_event_and_counts_none(sqlite_url: str) -> None:
    async with served(sqlite_url) as api:
        owner = await api.user("alice")
        pid, _ = await api.model(owner)
        async with api.app.state.sessions() as session:
            await live.publish(session, uuid.UUID(pid), "model.created", {"name": "gone"})
            await session.rollback()
        r = await api.client.get(f"/v1/projects/{pid}/events", headers=owner)
        assert [e["kind"] for e in r.json()["items"]] == ["model.created"]
        text_ = (await api.client.get("/metrics")).text
        assert sample(text_, "bem_events_total", kind="model.created") == 1


async def test_sse_replays_then_follows_and_resumes_from_last_event_id(
    database_url: str,
) -> None:
    async with served(database_url) as api:
        owner = await api.user("alice")
        pid, mid = await api.model(owner)
        url = f"/v1/projects/{pid}/events/stream"
        async with api.client.stream("GET", url, params={"after": 0}, headers=owner) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            frames = sse_frames(r)
            (created,) = await next_events(frames, 1)  # replayed
            assert created["kind"] == "model.created" and created["sse_id"] == str(created["id"])
            await api.upload(owner, mid, storey())
            (live_event,) = await next_events(frames, 1)  # live
            assert live_event["kind"] == "version.created"
            async with asyncio.timeout(5):  # a quiet stream sends keep-alives
                async for frame in frames:
                    if frame.get("comment") == "keep-alive":
                        break
        await api.upload(owner, mid, storey("L2"))
        await api.upload(owner, mid, storey("L3"))
        resume = {**owner, "Last-Event-ID": str(live_event["id"])}
        async with api.client.stream("GET", url, headers=resume) as r:
            missed = await next_events(sse_frames(r), 2)
        assert [e["data"]["seq"] for e in missed] == [2, 3]

        # Without a cursor, only what happens from now on.
        async with api.client.stream("GET", url, headers=owner) as r:
            frames = sse_frames(r)
            await api.upload(owner, mid, storey("L4"))
            (only,) = await next_events(frames, 1)
        assert only["data"]["seq"] == 4

        vic = await api.user("vic")
        assert (await api.client.get(url, headers=vic)).status_code == 404
        root = await api.user("root", admin=True)  # passes every role check, but no project
        nowhere = f"/v1/projects/{uuid.uuid4()}/events"
        assert (await api.client.get(nowhere, headers=root)).status_code == 404
        assert (await api.client.get(f"{nowhere}/stream", headers=root)).status_code == 404
        assert (await api.client.get(url)).status_code == 401
        bad = await api.client.get(url, headers={**owner, "Last-Event-ID": "x"})
        assert bad.status_code == 422


async def test_websocket_feed_authenticates_counts_and_closes_with_1012_on_shutdown(
    database_url: str,
) -> None:
    async with served(database_url) as api:
        owner = await api.user("alice")
        pid, mid = await api.model(owner)
        url = ws_url(api, f"/v1/projects/{pid}/events/ws?after=0")

        root = await api.user("root", admin=True)
        nowhere = ws_url(api, f"/v1/projects/{uuid.uuid4()}/events/ws")
        for target, headers, status in (
            (url, {}, 401),
            (url, await api.user("olga"), 404),
            (nowhere, root, 404),
        ):
            with pytest.raises(InvalidStatus) as denied:
                async with connect(target, additional_headers=headers):
                    pass
            assert denied.value.response.status_code == status
            assert b'"status":' + str(status).encode() in denied.value.response.body

        async with connect(url, additional_headers=owner) as ws:
            first = orjson.loads(await ws.recv())
            assert first["type"] == "event" and first["event"]["kind"] == "model.created"
            metrics = (await api.client.get("/metrics")).text
            assert sample(metrics, "bem_feed_connections", transport="websocket") == 1
            detail = (await api.client.get("/health", headers=root)).json()
            assert detail["live"]["connections"] == {"websocket": 1, "sse": 0}
            await api.upload(owner, mid, storey())
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["event"]["kind"] == "version.created"
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "heartbeat"}

        # Browsers send the token as a subprotocol pair; the server picks "bem.bearer".
        token = owner["Authorization"].removeprefix("Bearer ")
        async with connect(url, subprotocols=["bem.bearer", token]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "bem.bearer"
            assert orjson.loads(await ws.recv())["event"]["kind"] == "model.created"
            await asyncio.sleep(0.1)
            assert api.hub.counts["websocket"] == 1
            api.app.state.draining = True  # what SIGTERM sets
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        await asyncio.sleep(0.1)
        assert api.hub.counts["websocket"] == 0
        metrics = (await api.client.get("/metrics")).text
        assert sample(metrics, "bem_feed_connections", transport="websocket") == 0
        with pytest.raises(InvalidStatus) as busy:  # draining: no new connections
            async with connect(url, additional_headers=owner):
                pass
        assert busy.value.response.status_code == 503


async def test_every_websocket_refusal_is_a_problem_answer(sqlite_url: str) -> None:
    """A malformed id, a parameter of the wrong type, an unknown path: the handshake is
    refused with a problem+json body like every other refusal (they were bare closes)."""
    async with served(sqlite_url) as api:
        owner = await api.user("alice")
        pid, _ = await api.model(owner)
        for path, status in (
            ("/v1/projects/not-a-uuid/events/ws", 422),
            (f"/v1/projects/{pid}/events/ws?after=abc", 422),
            (f"/v1/projects/{pid}/events/ws?after=-1", 422),
            ("/v1/nowhere/ws", 404),
        ):
            with pytest.raises(InvalidStatus) as denied:
                async with connect(ws_url(api, path), additional_headers=owner):
                    pass
            response = denied.value.response
            assert response.status_code == status, path
            assert response.headers["content-type"] == "application/problem+json", path
            assert orjson.loads(response.body)["status"] == status, path


async def test_a_member_removed_mid_stream_is_disconnected(database_url: str) -> None:
    async with served(database_url) as api:
        owner = await api.user("alice")
        vic = await api.user("vic")
        pid, _ = await api.model(owner)
        r = await api.client.put(
            f"/v1/projects/{pid}/members/{api.users['vic'].id}",
            json={"role": "viewer"},
            headers=owner,
        )
        assert r.status_code == 200
        async with connect(
            ws_url(api, f"/v1/projects/{pid}/events/ws"), additional_headers=vic
        ) as ws:
            r = await api.client.delete(
                f"/v1/projects/{pid}/members/{api.users['vic'].id}", headers=owner
            )
            assert r.status_code == 204
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_revoked_follower_is_cut_off_within_a_heartbeat_on_a_busy_project(
    database_url: str,
) -> None:
    """Events every 0.1 s, faster than the 0.5 s heartbeat: the re-check is due by time, not
    by silence, so the stream ends within about one heartbeat of the removal."""
    async with served(database_url) as api:
        owner = await api.user("alice")
        vic = await api.user("vic")
        pid, _ = await api.model(owner)
        vic_id = api.users["vic"].id
        r = await api.client.put(
            f"/v1/projects/{pid}/members/{vic_id}", json={"role": "viewer"}, headers=owner
        )
        assert r.status_code == 200

        async def busy() -> None:
            for i in range(200):
                async with api.app.state.sessions() as session:
                    await live.publish(session, uuid.UUID(pid), "model.created", {"name": str(i)})
                    await session.commit()
                await asyncio.sleep(0.1)

        traffic = asyncio.create_task(busy())
        try:
            async with connect(
                ws_url(api, f"/v1/projects/{pid}/events/ws"), additional_headers=vic
            ) as ws:
                assert orjson.loads(await ws.recv())["type"] == "event"
                r = await api.client.delete(f"/v1/projects/{pid}/members/{vic_id}", headers=owner)
                assert r.status_code == 204
                removed = asyncio.get_running_loop().time()
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(5):
                        while True:
                            await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                assert asyncio.get_running_loop().time() - removed < 1.5
        finally:
            traffic.cancel()


async def test_concurrent_changes_reach_a_follower_once_each_in_id_order(
    database_url: str,
) -> None:
    async with served(database_url) as api:
        owner = await api.user("alice")
        pid, mid = await api.model(owner)
        models = [mid] + [
            (
                await api.client.post(
                    f"/v1/projects/{pid}/models", json={"name": f"M{i}"}, headers=owner
                )
            ).json()["id"]
            for i in range(3)
        ]
        url = ws_url(api, f"/v1/projects/{pid}/events/ws?after=0")
        async with connect(url, additional_headers=owner) as ws:
            await asyncio.gather(
                *(api.upload(owner, m, storey(f"L{i}")) for m in models for i in range(3))
            )
            seen: list[int] = []
            async with asyncio.timeout(10):
                while len(seen) < 4 + 12:
                    message = orjson.loads(await ws.recv())
                    if message["type"] == "event":
                        seen.append(message["event"]["id"])
        listed = (await api.client.get(f"/v1/projects/{pid}/events", headers=owner)).json()
        assert seen == [e["id"] for e in listed["items"]]
        assert len(set(seen)) == 16


async def test_a_follower_that_falls_behind_catches_up_from_the_outbox(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "QUEUE_SIZE", 3)
    async with served(sqlite_url) as api:
        owner = await api.user("alice")
        pid, _ = await api.model(owner)
        hub = api.hub

        async def allowed() -> bool:
            return True

        feed = hub.follow(uuid.UUID(pid), None, "sse", allowed)
        first = asyncio.ensure_future(feed.__anext__())  # subscribes, then waits
        await asyncio.sleep(0.2)
        async with api.app.state.sessions() as session:
            for i in range(20):
                await live.publish(session, uuid.UUID(pid), "model.created", {"name": str(i)})
            await session.commit()
        await asyncio.sleep(0.3)  # the hub dispatches all 20 to a queue of 3
        got = [await first]
        while len(got) < 20:
            item = await feed.__anext__()
            assert not isinstance(item, Ended | Heartbeat)
            got.append(item)
        await feed.aclose()
        assert [e.data["name"] for e in got] == [str(i) for i in range(20)]


@pytest.mark.postgres
async def test_outbox_ids_are_handed_out_in_commit_order(postgres_url: str) -> None:
    """A transaction that appends while another one holds an uncommitted event waits for
    it; otherwise a reader could pass the later id before the earlier one commits."""
    async with served(postgres_url) as api:
        owner = await api.user("alice")
        pid, _ = await api.model(owner)
        project = uuid.UUID(pid)
        order: list[str] = []

        async def slow() -> int:
            async with api.app.state.sessions() as session:
                event = await live.publish(session, project, "model.created", {"name": "slow"})
                await asyncio.sleep(0.5)
                order.append("slow")
                await session.commit()
                return event.id

        async def fast() -> int:
            await asyncio.sleep(0.1)
            async with api.app.state.sessions() as session:
                event = await live.publish(session, project, "model.created", {"name": "fast"})
                order.append("fast")
                await session.commit()
                return event.id

        slow_id, fast_id = await asyncio.gather(slow(), fast())
        assert order == ["slow", "fast"] and slow_id < fast_id
        async with api.app.state.sessions() as session:
            held = await session.scalar(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            )
        assert held == 0
