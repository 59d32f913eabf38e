"""The SLA gate: a Locust scenario (``bench/load/locustfile.py``) at a fixed arrival rate
against a BEM stack, judged against the service-level objective (p95 < 100 ms, errors
< 0.1 %, ``../shared/PRODUCTION_READINESS.md``).

The stack it starts by itself, or a running deployment (``--target URL`` with ``--token``:
API tokens of existing users with ``projects:write`` and ``versions:write``; it makes a
project of its own there, adds the other tokens' users as editors, and deletes the project
afterwards; the server's CPU and warnings are then not known). Its own stack is a
fresh PostgreSQL database, Redis when it answers (cache and rate limits shared by the
processes, as in production), users made with ``bem users create-admin``, a generated model
uploaded twice (the second 10 % mutated, for diffs), and either ``bem serve --workers 2`` on
a spare port (``--edge direct``) or the production topology (``--edge nginx``: nginx with TLS
in front of two ``bem serve`` processes, PgBouncer in front of PostgreSQL; the same number of
Python processes, ``tests/topology.py``). Rate limits stay on
but are raised far above the load, so the limiter's cost is measured and the generator is
not throttled. The cache is warmed first (one request per cached answer the mix repeats).
The load generator runs on the same 2 cores as the server: its CPU is reported beside the
server's.

``live`` holds ``--followers`` event streams (SSE) open while uploads and reads arrive; the
feed has its own objective: every follower gets the event of every upload answered while it
listened (but in the run's last second), and p95 delivery < 1 s (the feed polls every
``BEM_FEED_POLL_S``, 0.5 s).

Writes ``bench/results/<date>-<scenario>.json`` (rate asked and achieved, p50/p95/p99,
errors, CPU) and exits 1 when the objective does not hold. Usage::

    python bench/sla.py --scenario mixed --rate 40 --duration 60
    python bench/sla.py --capacity --scenario mixed   # steps the rate up; the highest that holds
    python bench/sla.py --smoke   # 20 s at a low rate: a test of the harness (CI), not timing
    python bench/sla.py --scenario live --followers 200 --rate 20
    python bench/sla.py --target https://bem.example.com --token T1 --token T2 --rate 10
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import make_url

from report import cpu_seconds, write_report  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
sys.path.insert(
    0, str(HERE.parent)
)  # tests/topology.py: nginx and PgBouncer, as the e2e tests run them
LOCUSTFILE = HERE / "load" / "locustfile.py"
SERVER_DB = os.environ.get("BEM_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS = os.environ.get("BEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
P95_MS, MAX_ERROR_RATIO = 100.0, 0.001
FEED_P95_MS = 1000.0
SCENARIOS = ["browse", "query", "diff", "upload", "live", "mixed"]
LIMITS = {  # far above any load here: the limiter works (and costs) but never throttles
    "BEM_RATE_LIMIT_DEFAULT": "1000000/minute",
    "BEM_RATE_LIMIT_IP_CEILING": "1000000/minute",
    "BEM_RATE_LIMIT_RULES": '{"upload": "1000000/hour", "export": "1000000/hour"}',
    "BEM_MAX_CONCURRENT_UPLOADS": "100",
}
CAPACITY_RATES = [20, 40, 60, 80, 100, 120, 140, 160, 200, 250, 300]


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


class Stack:
    """A BEM stack of its own: database, the API (direct or behind nginx), users and a model."""

    def __init__(self, elements: int, users: int, edge: str = "direct") -> None:
        self.elements, self.users, self.edge = elements, users, edge
        self.database = f"bem_bench_sla_{uuid.uuid4().hex[:8]}"
        self.prefix = f"bemsla{uuid.uuid4().hex[:8]}"
        self.work = Path(tempfile.mkdtemp(prefix="bem-sla-"))
        self.port = spare_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.redis = REDIS if redis_answers(REDIS) else None
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
        env.update(
            BEM_DATABASE_URL=SERVER_DB.rsplit("/", 1)[0] + f"/{self.database}",
            BEM_STORAGE_DIR=str(self.work / "sources"),
            BEM_LOG_LEVEL="WARNING",
            BEM_REDIS_KEY_PREFIX=self.prefix,
            **LIMITS,
        )
        if self.redis:
            env["BEM_REDIS_URL"] = self.redis
        self.env = env
        self.servers: list[subprocess.Popen[bytes]] = []
        self.edge_processes: list[subprocess.Popen[bytes]] = []  # nginx and PgBouncer
        self.cleanup: list[Any] = []

    def bem(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "bem", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        return done.stdout.strip()

    @contextmanager
    def running(self) -> Iterator[Stack]:
        admin = SERVER_DB
        _pg(admin, f'CREATE DATABASE "{self.database}"')
        try:
            self.bem("migrate")
            tokens = [
                self.bem("users", "create-admin", "--email", f"load{i}@example.com")
                for i in range(self.users)
            ]
            log = (self.work / "server.log").open("wb")  # warnings: what an overload did
            if self.edge == "nginx":
                self._start_topology(log)
            else:
                self._serve(self.env, self.port, "2", log)
            self.api = f"http://127.0.0.1:{self.port}"  # seeding and warming skip the edge
            self.fixture = seed(self.api, tokens, self.elements)
            yield self
        finally:
            for server in self.servers:
                server.terminate()
                server.wait(60)
            for remove in reversed(self.cleanup):
                remove()
            _pg(admin, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            if self.redis:
                import redis

                client = redis.Redis.from_url(self.redis)
                for key in client.scan_iter(f"{self.prefix}:*"):
                    client.delete(key)
            shutil.rmtree(self.work, ignore_errors=True)

    def _serve(self, env: dict[str, str], port: int, workers: str, log: Any) -> None:
        server = subprocess.Popen(
            [sys.executable, "-m", "bem", "serve", "--port", str(port), "--workers", workers],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.servers.append(server)
        _wait_ready(f"http://127.0.0.1:{port}", server)

    def _start_topology(self, log: Any) -> None:
        from tests.helpers import OwnPgBouncer
        from tests.topology import Nginx

        url = make_url(self.env["BEM_DATABASE_URL"])
        bouncer = OwnPgBouncer(shutil.which("pgbouncer") or "pgbouncer", url.host, url.port or 5432)
        self.cleanup.append(bouncer.remove)
        pooled = url.set(host="127.0.0.1", port=bouncer.port).render_as_string(hide_password=False)
        env = {
            **self.env,
            "BEM_DATABASE_URL": pooled,
            "BEM_DB_PGBOUNCER": "true",
            "BEM_TRUSTED_PROXIES": '["127.0.0.1/32"]',
        }
        ports = [self.port, spare_port()]
        for port in ports:
            self._serve(env, port, "1", log)
        # No gateway: the mixes do not follow the feed.
        nginx = Nginx(
            shutil.which("nginx") or "/usr/sbin/nginx",
            ports,
            ports[0],
            rate="100000r/s",
            connections=60_000,  # nginx takes at most 65535
        )
        nginx.start()
        self.cleanup.append(nginx.remove)
        assert nginx.proc is not None
        self.edge_processes = [nginx.proc, bouncer.proc]
        self.base = nginx.base

    def cpu(self) -> float:
        """CPU seconds of every server process (API processes, nginx, PgBouncer) so far."""
        return sum(cpu_seconds(p.pid) for p in self.servers + self.edge_processes)


class Target:
    """A running deployment (``--target``): a project of its own there, seeded through the API
    with the given tokens and deleted afterwards. What runs on the server is not known."""

    redis = None
    edge = "target"

    def __init__(self, base: str, tokens: list[str], elements: int) -> None:
        self.base = self.api = base.rstrip("/")
        self.tokens, self.elements = tokens, elements
        self.work = Path(tempfile.mkdtemp(prefix="bem-sla-"))
        (self.work / "server.log").touch()  # no server log here: no warnings to count

    @contextmanager
    def running(self) -> Iterator[Target]:
        self.fixture = seed(self.api, self.tokens, self.elements)
        try:
            self._share(self.fixture["project"])
            yield self
        finally:
            owner = {"Authorization": f"Bearer {self.tokens[0]}"}
            httpx.delete(f"{self.api}/v1/projects/{self.fixture['project']}", headers=owner)
            shutil.rmtree(self.work, ignore_errors=True)

    def _share(self, project: str) -> None:
        """The other tokens' users become editors of the project (they need not be admins)."""
        owner = {"Authorization": f"Bearer {self.tokens[0]}"}
        with httpx.Client(base_url=self.api, timeout=30) as client:
            owner_id = _ok(client.get("/v1/me", headers=owner))["id"]
            for token in self.tokens[1:]:
                me = _ok(client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}))
                if me["id"] != owner_id:
                    member = f"/v1/projects/{project}/members/{me['id']}"
                    _ok(client.put(member, json={"role": "editor"}, headers=owner))

    def cpu(self) -> float | None:
        return None


def _pg(url: str, statement: str) -> None:
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _wait_ready(base: str, server: subprocess.Popen[bytes], within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"bem serve exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    raise SystemExit("bem serve did not become ready")


def seed(base: str, tokens: list[str], elements: int) -> dict[str, Any]:
    """A project with a model of ``elements`` generated elements in two versions, a model
    for uploads, and what the scenarios pick from."""
    from bem.ingest.ifc import element_documents
    from bem.testing import ifcgen

    owner = {"Authorization": f"Bearer {tokens[0]}"}
    with httpx.Client(base_url=base, headers=owner, timeout=600) as client:
        project = _ok(client.post("/v1/projects", json={"name": "load"}))["id"]
        model = _ok(client.post(f"/v1/projects/{project}/models", json={"name": "building"}))
        upload_model = _ok(client.post(f"/v1/projects/{project}/models", json={"name": "drafts"}))
        first = ifcgen.generate(elements)  # seed 0: mutate (seed 1) makes GlobalIds of its own
        versions = []
        for source in (first, ifcgen.mutate(first, fraction=0.1)):
            docs = list(element_documents(source))
            body = b"".join(orjson.dumps(d) + b"\n" for d in docs)
            headers = {"Content-Type": "application/x-ndjson"}
            r = client.post(f"/v1/models/{model['id']}/versions", content=body, headers=headers)
            versions.append(_ok(r)["id"])
        gids = [d["global_id"] for d in element_documents(first)]
        cursors: list[str | None] = [None]
        for _ in range(4):  # the first pages of the element list
            page = _ok(client.get(f"/v1/versions/{versions[0]}/elements", params=_cursor(cursors)))
            if page.get("next_cursor"):
                cursors.append(page["next_cursor"])
        small = list(element_documents(ifcgen.generate(20, seed=2)))
        events_after = 0  # where the live scenario's followers start: after the seeding
        while page := _ok(
            client.get(f"/v1/projects/{project}/events", params={"after": events_after})
        )["items"]:
            events_after = page[-1]["id"]
    return {
        "events_after": events_after,
        "tokens": tokens,
        "project": project,
        "model": model["id"],
        "upload_model": upload_model["id"],
        "versions": versions,
        "global_ids": gids[:: max(1, len(gids) // 500)],
        "cursors": cursors,
        "selectors": [
            "IfcWall",
            "IfcSlab, IfcBeam",
            "IfcWall, Pset_WallCommon.IsExternal=TRUE",
            'IfcDoor, location="Level 01"',
            "IfcColumn, IfcBeam, material=Steel",
        ],
        "upload_body": b"".join(orjson.dumps(d) + b"\n" for d in small).decode(),
    }


def _cursor(cursors: list[str | None]) -> dict[str, str]:
    return {"cursor": cursors[-1]} if cursors[-1] else {}


def _ok(response: httpx.Response) -> Any:
    if response.is_error:
        raise SystemExit(f"seeding failed: {response.status_code} {response.text[:300]}")
    return response.json()


def warm(base: str, fixture: dict[str, Any]) -> None:
    """One request per answer the mixes repeat, so they meet a warm cache (as in production,
    where the first reader of a version pays)."""
    headers = {"Authorization": f"Bearer {fixture['tokens'][0]}"}
    v1, v2 = fixture["versions"]
    paths: list[tuple[str, dict[str, str]]] = []
    paths += [(f"/v1/versions/{v1}/elements", {"q": q}) for q in fixture["selectors"]]
    paths += [
        (f"/v1/versions/{v1}/elements", {"cursor": c} if c else {}) for c in fixture["cursors"]
    ]
    groups = ["class", "storey", "storey,class", "type", "material"]
    paths += [(f"/v1/versions/{v1}/takeoff", {"group_by": g}) for g in groups]
    paths += [
        (f"/v1/versions/{v1}/diff/{v2}", {"kind": k}) for k in ("added", "removed", "changed")
    ]
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for path, params in paths:
            _ok(client.get(path, params=params))


def run_locust(
    base: str,
    fixture_path: Path,
    scenario: str,
    rate: float,
    duration_s: int,
    work: Path,
    followers: int = 0,
) -> dict[str, Any]:
    users = max(1, min(8, int(rate // 20) + 1))
    followers -= followers % users  # each Locust user holds as many
    prefix = work / f"locust-{scenario}-{rate:g}"
    feed_log = prefix.with_name(prefix.name + "-feed.json")
    env = {
        **os.environ,
        "BEM_LOAD_FIXTURE": str(fixture_path),
        "BEM_LOAD_SCENARIO": scenario,
        "BEM_LOAD_RATE": str(rate),
        "BEM_LOAD_USERS": str(users),
        "BEM_LOAD_FOLLOWERS": str(followers),
        "BEM_LOAD_FEED_LOG": str(feed_log),
    }
    args = [
        *("-f", str(LOCUSTFILE), "--headless", "--host", base),
        *("--users", str(users), "--spawn-rate", str(users)),
        *("--run-time", f"{duration_s}s"),  # then users stop at once: arrivals end with it
        *("--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"),
    ]
    started = time.monotonic()
    locust = subprocess.Popen(
        [sys.executable, "-m", "locust", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "locust.log").open("ab"),
    )
    client_cpu = 0.0
    while locust.poll() is None:  # sampled: the children are gone once it has exited
        client_cpu = max(client_cpu, cpu_seconds(locust.pid))
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    if locust.returncode not in (0, 1):  # 1: some requests failed, which is judged below
        raise SystemExit(f"locust exited with {locust.returncode}; see {work / 'locust.log'}")
    rows = {row["Name"]: row for row in csv.DictReader(_csv(prefix, "stats").open())}
    total = rows.pop("Aggregated")
    failures = {
        f"{row['Name']}: {row['Error']}": int(row["Occurrences"])
        for row in csv.DictReader(_csv(prefix, "failures").open())
    }
    warnings = _warnings(work / "server.log")
    return {
        "feed": json.loads(feed_log.read_text()) if feed_log.exists() else None,
        "followers": followers,
        "total": total,
        "by_kind": rows,
        "failures": failures,
        "server_warnings": warnings,
        "elapsed_s": elapsed,
        "users": users,
        "client_cpu_s": client_cpu,
    }


def _csv(prefix: Path, table: str) -> Path:
    return prefix.with_name(f"{prefix.name}_{table}.csv")


def _warnings(log: Path) -> dict[str, int]:
    """The server's warning events so far (``cache_degraded``, ``rate_limited``, ...), by
    name: what an overload did, beside its latency."""
    events: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line).get("event")
        except ValueError:
            continue
        if isinstance(event, str):
            events[event] = events.get(event, 0) + 1
    return events


def _feed(measured: dict[str, Any]) -> dict[str, Any] | None:
    """What the followers got of the uploads answered while they listened, and how soon."""
    feed = measured["feed"]
    if feed is None:
        return None
    ordered = sorted(feed["delays_ms"])

    def at(q: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None

    return {
        "followers": measured["followers"],
        "events_expected": feed["expected"],
        "events_received": feed["received"],
        "p50_ms": at(0.5),
        "p95_ms": at(0.95),
        "max_ms": round(ordered[-1], 1) if ordered else None,
        "holds": feed["received"] == feed["expected"] and (at(0.95) or 0.0) < FEED_P95_MS,
    }


def judge(
    scenario: str,
    rate: float,
    duration_s: int,
    measured: dict[str, Any],
    server_cpu_s: float | None,
) -> dict[str, Any]:
    total = measured["total"]
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])

    def ms(row: dict[str, str], column: str) -> float | None:
        value = row.get(column, "N/A")
        return None if value in ("N/A", "") else float(value)

    result = {
        "scenario": scenario,
        "rate": rate,
        "duration_s": duration_s,
        "achieved_rate": round(requests / duration_s, 1),
        "requests": requests,
        "errors": failures,
        "error_ratio": round(failures / requests, 5) if requests else None,
        "p50_ms": ms(total, "50%"),
        "p95_ms": ms(total, "95%"),
        "p99_ms": ms(total, "99%"),
        "by_kind": {
            name: {
                "requests": int(row["Request Count"]),
                "errors": int(row["Failure Count"]),
                "p50_ms": ms(row, "50%"),
                "p95_ms": ms(row, "95%"),
            }
            for name, row in sorted(measured["by_kind"].items())
        },
        "failures": measured["failures"],
        "server_warnings_so_far": measured["server_warnings"],
        "feed": _feed(measured),
        "locust_users": measured["users"],
        "server_cpu_per_request_ms": round(1000 * server_cpu_s / requests, 2)
        if requests and server_cpu_s is not None
        else None,
        "server_cpu_percent": round(100 * server_cpu_s / duration_s, 1)
        if server_cpu_s is not None
        else None,
        "client_cpu_percent": round(100 * measured["client_cpu_s"] / duration_s, 1),
    }
    p95 = result["p95_ms"]
    result["holds"] = bool(
        requests
        and p95 is not None
        and p95 < P95_MS
        and failures / requests < MAX_ERROR_RATIO
        and requests >= 0.9 * rate * duration_s  # the generator kept up with the schedule
        and (result["feed"] is None or result["feed"]["holds"])
    )
    return result


def measure(
    stack: Stack | Target, scenario: str, rate: float, duration_s: int, followers: int = 0
) -> dict[str, Any]:
    fixture_path = stack.work / "fixture.json"
    fixture_path.write_text(json.dumps(stack.fixture))
    before = stack.cpu()
    measured = run_locust(
        stack.base, fixture_path, scenario, rate, duration_s, stack.work, followers
    )
    after = stack.cpu()
    server_cpu = None if before is None or after is None else after - before
    result = judge(scenario, rate, duration_s, measured, server_cpu)
    print(json.dumps({k: v for k, v in result.items() if k != "by_kind"}), file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="mixed", choices=SCENARIOS)
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per second")
    parser.add_argument("--duration", type=int, default=60, help="seconds per run")
    parser.add_argument("--elements", type=int, default=10_000, help="elements of the model")
    parser.add_argument("--users", type=int, default=8, help="BEM users (tokens) making requests")
    parser.add_argument(
        "--capacity", action="store_true", help="step the rate up: " + str(CAPACITY_RATES)
    )
    parser.add_argument(
        "--smoke", action="store_true", help="20 s at 5/s on 300 elements; judges errors only"
    )
    parser.add_argument(
        "--edge",
        default="direct",
        choices=["direct", "nginx"],
        help="bem serve --workers 2 alone, or nginx (TLS) + 2 bem serve + PgBouncer",
    )
    parser.add_argument(
        "--followers", type=int, default=50, help="event streams held open (live scenario)"
    )
    parser.add_argument("--target", help="a running BEM (base URL) instead of a stack of its own")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="with --target: an API token (repeat for more users; the first owns the project)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the report goes")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.duration, args.elements, args.users = 5.0, 20, 300, 2
        args.followers = min(args.followers, 4)
    if args.target and not args.token:
        parser.error("--target needs at least one --token")
    followers = args.followers if args.scenario == "live" else 0
    stack: Stack | Target = (
        Target(args.target, args.token, args.elements)
        if args.target
        else Stack(args.elements, args.users, args.edge)
    )
    with stack.running():
        warm(stack.api, stack.fixture)
        if args.capacity:
            runs = []
            for rate in CAPACITY_RATES:
                runs.append(measure(stack, args.scenario, rate, args.duration, followers))
                if not runs[-1]["holds"]:
                    break
            held = [r["rate"] for r in runs if r["holds"]]
            report: dict[str, Any] = {"capacity_rate": max(held) if held else 0, "runs": runs}
        else:
            report = measure(stack, args.scenario, args.rate, args.duration, followers)
    about = {
        "objective": {"p95_ms_below": P95_MS, "error_ratio_below": MAX_ERROR_RATIO},
        "stack": {
            "target": args.target,
            "api_processes": None if args.target else 2,
            "edge": stack.edge,
            "redis": None if args.target else stack.redis is not None,
            "elements": args.elements,
            "users": len(args.token) if args.target else args.users,
            "load_generator": "Locust (open loop) on the same machine",
        },
    }
    name = f"{datetime.date.today():%Y-%m-%d}-{args.scenario}"
    name += ("-capacity" if args.capacity else "") + ("-nginx" if args.edge == "nginx" else "")
    name += "-target" if args.target else ""
    if args.smoke:
        name = "smoke" + (f"-{args.scenario}" if args.scenario != "mixed" else "")
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(name, {**about, **report}, directory=args.out)
    if args.smoke:  # a test of the harness: requests made and answered, none failed
        delivered = report["feed"] is None or report["feed"]["events_received"] > 0
        return 0 if report["requests"] and report["errors"] == 0 and delivered else 1
    if args.capacity:
        return 0
    return 0 if report["holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
