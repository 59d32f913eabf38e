"""Change-feed latency and fan-out: N WebSocket followers of one project on a real
``bem serve`` process (PostgreSQL), while versions are uploaded one at a time.

Latency is from the upload's 201 answer (its transaction has committed) to the moment each
follower has the ``version.created`` event; it is bounded by ``BEM_FEED_POLL_S``. The
server's CPU while the followers wait (no uploads) shows what holding them costs. Prints
JSON and writes ``bench/results/feed.json``. Usage: ``python bench/feed.py [followers ...]``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from report import cpu_seconds, write_report  # bench/ is on sys.path when run as a script

SERVER = os.environ.get("BEM_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
UPLOADS = 20
# Followers connected, nothing happening: the poller, and one heartbeat (with its credential
# check) per follower at the default 25 s.
IDLE_S = 26.0
PORT = 18731


def _url(database: str) -> str:
    return SERVER.rsplit("/", 1)[0] + f"/{database}"


def bem(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bem", *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


class Tally:
    """When each follower got each version's event; an asyncio.Event per version is set once
    every follower has it."""

    def __init__(self, followers: int) -> None:
        self.followers = followers
        self.arrivals: dict[str, list[float]] = {}
        self.complete: dict[str, asyncio.Event] = {}

    def everyone(self, vid: str) -> asyncio.Event:
        return self.complete.setdefault(vid, asyncio.Event())

    async def follow(self, ws: ClientConnection) -> None:
        async for raw in ws:
            message = orjson.loads(raw)
            if message["type"] == "event" and message["event"]["kind"] == "version.created":
                vid = message["event"]["data"]["version_id"]
                times = self.arrivals.setdefault(vid, [])
                times.append(time.perf_counter())
                if len(times) == self.followers:
                    self.everyone(vid).set()


async def run(followers: int, poll_s: float, env: dict[str, str], token: str) -> dict[str, Any]:
    env = {**env, "BEM_FEED_POLL_S": str(poll_s)}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bem",
        "serve",
        "--port",
        str(PORT),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{PORT}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            for _ in range(300):
                try:
                    if (await client.get("/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            pid = (await client.post("/v1/projects", json={"name": "Feed"})).json()["id"]
            model = await client.post(f"/v1/projects/{pid}/models", json={"name": "M"})
            mid = model.json()["id"]
            url = base.replace("http", "ws") + f"/v1/projects/{pid}/events/ws"
            sockets = [await connect(url, additional_headers=headers) for _ in range(followers)]
            tally = Tally(followers)
            tasks = [asyncio.create_task(tally.follow(ws)) for ws in sockets]
            cpu_before = cpu_seconds(server.pid)
            await asyncio.sleep(IDLE_S)
            idle_cpu = cpu_seconds(server.pid) - cpu_before
            latencies: list[float] = []
            for i in range(UPLOADS):
                doc = {"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey"}
                r = await client.post(
                    f"/v1/models/{mid}/versions",
                    content=orjson.dumps({**doc, "name": f"L{i}"}),
                    headers={"content-type": "application/x-ndjson"},
                )
                committed, vid = time.perf_counter(), r.json()["id"]
                await asyncio.wait_for(tally.everyone(vid).wait(), 10)
                latencies += [t - committed for t in tally.arrivals[vid]]
                await asyncio.sleep(poll_s * ((i * 7) % 10) / 10)  # spread over the poll cycle
            for task in tasks:
                task.cancel()
            for ws in sockets:
                await ws.close()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 60)
    latencies.sort()
    expected = followers * UPLOADS
    return {
        "followers": followers,
        "poll_s": poll_s,
        "events_expected": expected,
        "events_received": len(latencies),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1),
        "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        "latency_ms_max": round(latencies[-1] * 1000, 1),
        "idle_server_cpu_percent": round(100 * idle_cpu / IDLE_S, 1),
    }


async def main(counts: list[int]) -> None:
    database = f"bem_bench_feed_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(SERVER)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="bem-bench-feed-") as work:
            env = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
            env.update(
                BEM_DATABASE_URL=_url(database),
                BEM_STORAGE_DIR=str(Path(work) / "sources"),
                BEM_RATE_LIMIT_ENABLED="false",
                BEM_LOG_LEVEL="WARNING",
            )
            bem(["migrate"], env)
            token = bem(["users", "create-admin", "--email", "bench@example.com"], env)
            runs = [await run(n, 0.5, env, token) for n in counts]
            runs.append(await run(counts[0], 0.1, env, token))
        write_report("feed", {"uploads_per_run": UPLOADS, "runs": runs})
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [1, 100, 500]))
