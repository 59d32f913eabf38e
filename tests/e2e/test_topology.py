"""The production topology natively (tests/topology.py): nginx with TLS in front of two API
processes and the gateway, a worker, PgBouncer, PostgreSQL and Redis. Requests balance, a
process that dies or stops loses no idempotent request, the live feed passes through nginx,
and nginx's own answers are problem+json like BEM's."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from bem.config import Settings
from bem.testing import ifcgen
from tests.conftest import postgres_clone, s3_bucket
from tests.helpers import OwnPgBouncer, tool
from tests.integration.test_imports import ifc_bytes
from tests.topology import TEMPLATE, Nginx, Topology, topology

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def stack(
    postgres_template: str,
    pgbouncer: OwnPgBouncer,
    shared_redis: str,
    s3_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Topology]:
    nginx = tool("nginx", "nginx")
    root = tmp_path_factory.mktemp("topo")
    with pytest.MonkeyPatch.context() as env, postgres_clone(postgres_template) as url:
        bucket = s3_bucket(env, s3_server)
        with topology(url, pgbouncer.port, shared_redis, f"s3://{bucket}", nginx, root) as s:
            yield s


@pytest.fixture(scope="module")
def client(stack: Topology) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.nginx.base, verify=stack.nginx.tls(), headers=stack.headers, timeout=20
    ) as c:
        yield c


@pytest.fixture(scope="module")
def version(client: httpx.Client) -> dict[str, str]:
    """A model with one version, uploaded through nginx."""
    pid = client.post("/v1/projects", json={"name": "Topology"}).json()["id"]
    mid = client.post(f"/v1/projects/{pid}/models", json={"name": "M"}).json()["id"]
    r = client.post(
        f"/v1/models/{mid}/imports",
        files={"file": ("m.ifc", ifc_bytes(ifcgen.generate(40)), "application/octet-stream")},
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    return {"project": pid, "model": mid, "version": job["version_id"], "job": job["id"]}


def wait_job(client: httpx.Client, job_id: str) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            assert job["status"] == "succeeded", job
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


class Load:
    """Threads sending GETs through nginx until stopped; every answer's status is kept."""

    def __init__(self, stack: Topology, paths: list[str], threads: int = 4) -> None:
        self.stack, self.paths = stack, paths
        self.statuses: Counter[int | str] = Counter()
        self.running = threading.Event()
        self.running.set()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, offset: int) -> None:
        with httpx.Client(
            base_url=self.stack.nginx.base,
            verify=self.stack.nginx.tls(),
            headers=self.stack.headers,
            timeout=20,
        ) as c:
            i = offset
            while self.running.is_set():
                try:
                    status: int | str = c.get(self.paths[i % len(self.paths)]).status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                self.statuses[status] += 1
                i += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.running.clear()
        for t in self.threads:
            t.join(timeout=30)


def until_both_serve(stack: Topology, client: httpx.Client) -> None:
    """Until nginx sends requests to both API processes again (a process it saw fail rests
    for fail_timeout, 3 s, before nginx tries it again)."""
    want = {f"127.0.0.1:{port}" for port in stack.api_ports}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for _ in range(4):
            assert client.get("/v1/me").status_code == 200
        if {x["upstream"] for x in stack.nginx.access_log()[-4:]} == want:
            return
        time.sleep(0.5)
    raise AssertionError("nginx did not take the restarted process back")


def logged(stack: Topology, request_id: str) -> dict[str, Any]:
    """nginx's access-log line of a request (written just after the answer)."""
    for _ in range(50):
        for line in reversed(stack.nginx.access_log()):
            if line["request_id"] == request_id:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no access-log line for {request_id}")


def reads(version: dict[str, str]) -> list[str]:
    v = version["version"]
    return [
        "/v1/me",
        f"/v1/versions/{v}",
        f"/v1/versions/{v}/elements?limit=20",
        f"/v1/versions/{v}/takeoff?group_by=class",
        f"/v1/projects/{version['project']}/events",
    ]


def test_the_configuration_passes_nginx_t(stack: Topology) -> None:
    r = stack.nginx.check()
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


def test_the_body_limit_is_bems_import_limit() -> None:
    assert "client_max_body_size 2g;" in TEMPLATE.read_text()
    assert Settings().max_import_bytes == 2 * 1024**3


def test_requests_balance_across_both_api_processes(
    stack: Topology, client: httpx.Client, version: dict[str, str]
) -> None:
    for _ in range(20):
        assert client.get(f"/v1/versions/{version['version']}").status_code == 200
    upstreams = Counter(
        line["upstream"]
        for line in stack.nginx.access_log()[-20:]
        if line["uri"].startswith("/v1/versions/")
    )
    assert set(upstreams) == {f"127.0.0.1:{port}" for port in stack.api_ports}, upstreams
    assert min(upstreams.values()) >= 5, upstreams


def test_tls_end_to_end_with_bems_own_security_headers(
    stack: Topology, client: httpx.Client
) -> None:
    r = client.get("/v1/me", headers={"X-Request-ID": "topology-check-1"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "topology-check-1"
    # BEM sends HSTS because nginx, a trusted proxy, says the client came over https; once.
    assert r.headers.get_list("strict-transport-security") == [
        "max-age=31536000; includeSubDomains"
    ]
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert r.extensions["http_version"] == b"HTTP/1.1"
    assert logged(stack, "topology-check-1")["uri"] == "/v1/me"
    plain = httpx.get(f"http://127.0.0.1:{stack.nginx.http_port}/v1/me?x=1")
    assert plain.status_code == 308
    assert plain.headers["location"] == f"{stack.nginx.base}/v1/me?x=1"
    old = stack.nginx.tls()
    with warnings.catch_warnings():  # the point: versions Python itself calls deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.TLSv1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.nginx.base}/health/live", verify=old)


def test_json_is_compressed_at_the_edge(client: httpx.Client, version: dict[str, str]) -> None:
    r = client.get(
        f"/v1/versions/{version['version']}/elements?limit=100",
        headers={"Accept-Encoding": "gzip"},
    )
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    etag = r.headers["etag"]
    assert etag.startswith('W/"')  # nginx weakens what it compresses
    again = client.get(
        f"/v1/versions/{version['version']}/elements?limit=100",
        headers={"Accept-Encoding": "gzip", "If-None-Match": etag},
    )
    assert again.status_code == 304
    assert len(r.json()["items"]) == 49  # 40 products and their spatial structure


@pytest.mark.parametrize(
    ("index", "signum", "exit_code"),
    [(0, signal.SIGKILL, -signal.SIGKILL), (1, signal.SIGTERM, 0)],
    ids=["kill -9", "SIGTERM"],
)
def test_losing_one_api_process_loses_no_request_it_had_not_begun_to_answer(
    stack: Topology,
    client: httpx.Client,
    version: dict[str, str],
    index: int,
    signum: signal.Signals,
    exit_code: int,
) -> None:
    """kill -9: nginx sends what the dead process dropped before answering to the other
    one. SIGTERM: the process finishes what it has, nginx sends the rest to the other one."""
    until_both_serve(stack, client)
    process = stack.procs[f"api{index}"]
    with Load(stack, reads(version)) as load:
        time.sleep(1)
        process.send_signal(signum)
        assert process.wait(timeout=30) == exit_code
        time.sleep(2)
    stack.start_api(index)
    assert sum(load.statuses.values()) > 50, load.statuses
    # An answer the process had begun to send cannot be resent: nginx has passed its status
    # line on and can only cut the client off (and says so in its log). Everything else is
    # answered, and nothing the client gets is a 5xx.
    errors = stack.nginx.error_log()
    cut_off = errors.count("prematurely closed connection while reading upstream")
    failed = {k: n for k, n in load.statuses.items() if k != 200}
    assert set(failed) <= {"RemoteProtocolError"}, (load.statuses, errors[-3000:])
    assert sum(failed.values()) <= cut_off, (load.statuses, errors[-3000:])


def test_an_import_through_one_process_is_downloaded_through_the_other(
    stack: Topology, version: dict[str, str]
) -> None:
    """Both processes (and the worker) share the bucket, not a disk."""
    one, two = (f"http://127.0.0.1:{port}" for port in stack.api_ports)
    content = ifc_bytes(ifcgen.generate(10, seed=3))
    r = httpx.post(
        f"{one}/v1/models/{version['model']}/imports",
        files={"file": ("other.ifc", content, "application/octet-stream")},
        headers=stack.headers,
        timeout=20,
    )
    assert r.status_code == 202, r.text
    with httpx.Client(base_url=two, headers=stack.headers, timeout=20) as c:
        job = wait_job(c, r.json()["id"])
        source = c.get(f"/v1/versions/{job['version_id']}/source")
    assert source.status_code == 200
    assert source.content == content
    assert not (stack.root / "no-local-sources").exists()


async def test_sse_and_websocket_pass_through_nginx_and_resume_across_a_gateway_restart(
    stack: Topology, version: dict[str, str]
) -> None:
    pid, base = version["project"], stack.nginx.base
    tls = stack.nginx.tls()
    ws_url = base.replace("https://", "wss://") + f"/v1/projects/{pid}/events/ws?after=0"
    async with connect(ws_url, additional_headers=stack.headers, ssl=tls) as ws:
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["event"]["kind"] == "model.created"

    async with httpx.AsyncClient(
        base_url=base, verify=stack.nginx.tls(), headers=stack.headers, timeout=20
    ) as client:
        last = (await client.get(f"/v1/projects/{pid}/events")).json()["last_id"]
        seen: list[int] = []
        async with client.stream("GET", f"/v1/projects/{pid}/events/stream?after=0") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async with asyncio.timeout(10):
                async for line in r.aiter_lines():
                    if line.startswith("id:"):
                        seen.append(int(line[3:]))
                    if seen and seen[-1] == last:
                        break
            stack.procs["gateway"].send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(stack.procs["gateway"].wait, 30) == 0
        await asyncio.to_thread(stack.start_gateway)
        # A new event while the follower was away: it gets it on resuming from its last id.
        r = await client.post(f"/v1/projects/{pid}/models", json={"name": "While away"})
        assert r.status_code == 201, r.text
        resumed: list[dict[str, Any]] = []
        headers = {"Last-Event-ID": str(seen[-1])}
        async with client.stream("GET", f"/v1/projects/{pid}/events/stream", headers=headers) as r:
            assert r.status_code == 200
            async with asyncio.timeout(15):
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        resumed.append(orjson.loads(line[5:]))
                        break
        assert resumed[0]["id"] > seen[-1]
        assert resumed[0]["kind"] == "model.created"
        assert resumed[0]["data"]["name"] == "While away"
    # The WebSocket resumes the same way, through nginx to the restarted gateway.
    ws_after = base.replace("https://", "wss://") + f"/v1/projects/{pid}/events/ws?after={seen[-1]}"
    async with connect(ws_after, additional_headers=stack.headers, ssl=tls) as ws:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["event"]["data"]["name"] == "While away"


def raw_https(stack: Topology, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request as written, over TLS; the status, headers and body of the answer."""
    context = stack.nginx.tls()
    with (
        socket.create_connection(("127.0.0.1", stack.nginx.https_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
    return int(status_line.split()[1]), headers, body


def test_nginx_refuses_too_large_bodies_and_long_lines_as_problems(stack: Topology) -> None:
    status, headers, body = raw_https(
        stack,
        b"POST /v1/models/x/imports HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: 3000000000\r\nConnection: close\r\n\r\n",
    )
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert orjson.loads(body)["type"] == "https://bem.dev/problems/payload-too-large"

    long_path = "/v1/me?" + "x" * (70 * 1024)
    status, headers, body = raw_https(
        stack, f"GET {long_path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 414
    assert orjson.loads(body)["status"] == 414
    assert headers["x-request-id"] == orjson.loads(body)["request_id"]


def test_a_long_selector_within_bems_limit_passes_nginx(
    client: httpx.Client, version: dict[str, str]
) -> None:
    q = 'IfcWall, Name="' + "é" * 3900 + '"'  # about 47 KB percent-encoded
    r = client.get(f"/v1/versions/{version['version']}/elements", params={"q": q})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


def test_edge_limits_answer_429_with_retry_after(stack: Topology) -> None:
    edge = Nginx(stack.nginx.binary, stack.api_ports, stack.gateway_port, rate="1r/s", burst=2)
    edge.start()
    try:
        with httpx.Client(base_url=edge.base, verify=edge.tls(), timeout=10) as c:
            statuses = [c.get("/health/live") for _ in range(6)]
    finally:
        edge.remove()
    refused = [r for r in statuses if r.status_code == 429]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    assert refused, [r.status_code for r in statuses]
    assert refused[0].headers["retry-after"] == "1"
    assert refused[0].json()["type"] == "https://bem.dev/problems/too-many-requests"


def test_no_process_answering_is_a_503_with_retry_after(stack: Topology) -> None:
    nowhere = Nginx(stack.nginx.binary, [1], 1)
    nowhere.start()
    try:
        r = httpx.get(f"{nowhere.base}/v1/me", verify=nowhere.tls(), timeout=10)
    finally:
        nowhere.remove()
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "https://bem.dev/problems/upstream-unavailable"


def test_metrics_are_not_served_at_the_edge(client: httpx.Client) -> None:
    r = client.get("/metrics")
    assert r.status_code == 404
    assert r.json()["type"] == "https://bem.dev/problems/not-found"


def test_the_compose_upstreams_name_the_same_upstreams() -> None:
    compose = (Path(TEMPLATE).parents[1] / "upstreams.conf").read_text()
    assert "upstream bem_api" in compose and "upstream bem_gateway" in compose
