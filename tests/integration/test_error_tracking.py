"""Error tracking: a route that raises sends exactly one scrubbed envelope to a local stub
collector (release, environment, request id; no secrets); a 404 sends none."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk

from bem import __version__
from tests.conftest import make_api, settings_for


class Collector:
    def __init__(self) -> None:
        self.envelopes: list[list[dict[str, Any]]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                collector.envelopes.append(lines)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    c.thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()
        sentry_sdk.init()  # back to a disabled client for the other tests


async def test_one_scrubbed_envelope_per_unhandled_error(
    sqlite_url: str, collector: Collector
) -> None:
    settings = settings_for(sqlite_url, sentry_dsn=collector.dsn)
    async with make_api(settings) as api:
        alice = await api.user("alice")

        async def boom() -> None:
            secret = "bem_pat_SUPERSECRETTOKEN123"
            raise RuntimeError(f"failed for alice@example.com with {secret} and code 123456")

        api.app.add_api_route("/boom", boom)
        r = await api.client.get(
            "/boom", headers={**alice, "X-Request-ID": "boom-1", "Cookie": "session=abc"}
        )
        assert r.status_code == 500
        r = await api.client.get("/v1/projects/00000000-0000-0000-0000-000000000000", headers=alice)
        assert r.status_code == 404
        sentry_sdk.flush(timeout=5)

    events = [item for env in collector.envelopes for item in env if item.get("exception")]
    assert len(events) == 1
    event = events[0]
    assert event["release"] == __version__ and event["environment"] == "test"
    assert event["tags"]["request_id"] == "boom-1"
    assert event["tags"]["commit"] == api.app.state.build.commit
    text = json.dumps(collector.envelopes)
    for secret in (
        "SUPERSECRETTOKEN123",
        "alice@example.com",
        "123456",
        "session=abc",
        alice["Authorization"].split()[1],
    ):
        assert secret not in text
    assert "RuntimeError" in text
