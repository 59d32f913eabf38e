"""The production topology of the live feed: the API in one process, ``bem gateway`` and
``bem worker`` in others, on PostgreSQL and Redis. Events the worker writes reach a
WebSocket on the gateway and a webhook receiver; SIGTERM closes the WebSocket with 1012
and the gateway exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bem.testing import ifcgen
from tests.conftest import make_api
from tests.e2e.test_worker import queued_settings, worker_env, worker_process
from tests.helpers import bem_server, free_port
from tests.integration.test_imports import ifc_bytes, model_of, submit, wait_for
from tests.integration.test_metrics import sample
from tests.integration.test_webhooks import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


async def test_gateway_and_worker_carry_events_across_processes(
    postgres_url: str, shared_redis: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    hook_server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = hook_server.sockets[0].getsockname()[1]
    settings = queued_settings(postgres_url, shared_redis, webhook_allow_private=True)
    metrics_port = free_port()
    env = {
        **worker_env(settings, tmp_path),
        "BEM_FEED_POLL_S": "0.1",
        "BEM_WEBHOOK_ALLOW_PRIVATE": "true",
        "BEM_WORKER_METRICS_PORT": str(metrics_port),
    }
    async with hook_server, make_api(settings) as api:
        headers, mid = await model_of(api)
        pid = (await api.client.get(f"/v1/models/{mid}", headers=headers)).json()["project_id"]
        r = await api.client.post(
            f"/v1/projects/{pid}/webhooks", json={"url": receiver.url}, headers=headers
        )
        assert r.status_code == 201, r.text
        with (
            bem_server(env, tmp_path, command="gateway", capture=True) as (base, gateway),
            worker_process(env, tmp_path / "worker.log"),
        ):
            outside = httpx.AsyncClient(timeout=10)
            assert (await outside.get(f"{base}/v1/projects", headers=headers)).status_code == 404
            assert (await outside.get(f"{base}/health/ready")).status_code == 200
            url = base.replace("http://", "ws://") + f"/v1/projects/{pid}/events/ws?after=0"
            try:
                ws = await connect(url, additional_headers=headers)
            except InvalidStatus as exc:  # say why, from the gateway's own log
                gateway.terminate()
                log = gateway.communicate(timeout=30)[0].decode()
                raise AssertionError(f"{exc.response.body!r}\n{log}") from exc
            async with ws:
                first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert first["event"]["kind"] == "model.created"
                scrape = (await outside.get(f"{base}/metrics")).text
                assert sample(scrape, "bem_feed_connections", transport="websocket") == 1

                r = await submit(api, headers, mid, "m.ifc", ifc_bytes(ifcgen.generate(20)))
                job = await wait_for(api, headers, r.json()["id"])
                assert job["status"] == "succeeded", job
                # The import, then the geometry job the worker queued after it (through
                # Redis, as soon as the version committed).
                seen = []
                async with asyncio.timeout(15):
                    while len(seen) < 3:
                        message = orjson.loads(await ws.recv())
                        if message["type"] == "event":
                            seen.append(message["event"])
                kinds = [(e["kind"], e["data"].get("kind")) for e in seen]
                assert kinds == [
                    ("version.created", None),
                    ("job.succeeded", "import"),
                    ("job.succeeded", "geometry"),
                ]

                await receiver.until(3)
                # Up to webhook_per_destination deliveries go at once: they may arrive in
                # either order, and the event id says which came first.
                bodies = sorted(
                    (orjson.loads(r["body"]) for r in receiver.received), key=lambda b: b["id"]
                )
                assert [b["id"] for b in bodies] == [e["id"] for e in seen]
                for _ in range(100):  # the worker counts once it has recorded the answer
                    worker = (await outside.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                    if sample(worker, "bem_webhook_deliveries_total", outcome="succeeded") == 3:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the worker did not count three deliveries")
                assert sample(worker, "bem_events_total", kind="job.succeeded") == 2

                gateway.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(15):
                        while True:
                            await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            assert await asyncio.to_thread(gateway.wait, 30) == 0
            await outside.aclose()
