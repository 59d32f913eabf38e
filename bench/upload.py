"""Version upload throughput and memory: NDJSON bodies of 1k / 10k / 50k elements streamed
through the real app (in-process ASGI) into SQLite and, when reachable, PostgreSQL.

Elements come from ``bem.testing.ifcgen`` (1,000 generated elements, replicated with fresh
GlobalIds and names to reach larger sizes). Each measurement runs in a fresh process that
streams the body from a file, so its peak RSS growth is the upload's own memory.
Prints JSON and writes ``bench/results/upload.json``. Usage: ``python bench/upload.py [sizes]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bem.app import create_app
from bem.auth.models import User
from bem.auth.service import issue_token
from bem.config import Settings
from bem.ingest.ifc import element_documents
from bem.kit import migrate
from bem.testing import ifcgen
from report import peak_rss_mib, write_report  # bench/ is on sys.path when run as a script

SERVER = os.environ.get("BEM_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
CHUNK = 256 * 1024


def _gid(seed: str) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$"
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(alphabet[b % 64] for b in digest[:22])


def write_body(path: Path, size: int, base: list[dict[str, Any]]) -> int:
    with path.open("wb") as out:
        for i in range(size):
            doc = dict(base[i % len(base)])
            if i >= len(base):
                doc["global_id"] = _gid(f"{i}")
                doc["name"] = f"{doc['name']} #{i}"
            out.write(orjson.dumps(doc) + b"\n")
    return path.stat().st_size


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


async def admin_headers(app: Any) -> dict[str, str]:
    """Authorization headers of a new admin's API token, for benchmarks."""
    async with app.state.sessions() as session:
        user = User(email="bench@example.com", name="bench", is_admin=True)
        session.add(user)
        await session.flush()
        _, token = await issue_token(session, user, "bench", ["admin"])
        await session.commit()
    return {"Authorization": f"Bearer {token}"}


async def measure(database_url: str, body: Path, size: int, body_bytes: int) -> dict[str, Any]:
    settings = Settings(profile="test", database_url=database_url, log_level="WARNING")
    await asyncio.to_thread(migrate.upgrade, settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        headers = await admin_headers(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
            pid = (await client.post("/v1/projects", json={"name": "b"}, headers=headers)).json()
            model = await client.post(
                f"/v1/projects/{pid['id']}/models", json={"name": "m"}, headers=headers
            )
            rss_before = peak_rss_mib()
            seconds = []
            for _ in range(2):  # the second upload of the same model stores no new payloads
                started = time.perf_counter()
                r = await client.post(
                    f"/v1/models/{model.json()['id']}/versions",
                    content=_chunks(body),
                    headers={**headers, "content-type": "application/x-ndjson"},
                    timeout=600,
                )
                seconds.append(time.perf_counter() - started)
                assert r.status_code == 201, r.text
            elapsed, repeat = seconds
    return {
        "elements": size,
        "body_mib": round(body_bytes / 2**20, 1),
        "seconds": round(elapsed, 2),
        "elements_per_s": round(size / elapsed),
        "repeat_upload_seconds": round(repeat, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_growth_mib": round(peak_rss_mib() - rss_before, 1),
    }


async def pg_database() -> str | None:
    name = f"bem_bench_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop(name: str) -> None:
    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def child(database_url: str, body: Path, size: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", database_url, str(body), str(size)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])  # after any logs
    return row


async def main(sizes: list[int]) -> None:
    base = list(element_documents(ifcgen.generate(1000)))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            body = Path(tmp) / f"{size}.ndjson"
            write_body(body, size, base)
            sqlite_row = child(f"sqlite+aiosqlite:///{tmp}/bench-{size}.db", body, size)
            results.append({"database": "sqlite", **sqlite_row})
            name = await pg_database()
            if name is not None:
                try:
                    url = SERVER.rsplit("/", 1)[0] + f"/{name}"
                    results.append({"database": "postgresql", **child(url, body, size)})
                finally:
                    await drop(name)
            print(json.dumps(results[-2:]), file=sys.stderr)
    write_report("upload", {"results": results})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        url, path, n = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(asyncio.run(measure(url, path, n, path.stat().st_size))))
    else:
        asyncio.run(main([int(a) for a in sys.argv[1:]] or [1000, 10000, 50000]))
