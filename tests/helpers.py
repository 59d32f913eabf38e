"""Helpers for tests that run real processes on this machine."""

from __future__ import annotations

import gzip
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bem.kit.build import Build
from bem.kit.metrics import Metrics

REQUIRE_SERVICES = os.environ.get("BEM_REQUIRE_SERVICES") == "1"
# Debian's Chromium, headless, as the console's browser tests and bench/console.py run it.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SAMPLE_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")


class PostCollector:
    """A stub collector on 127.0.0.1 keeping every POST body, decompressed (Sentry
    envelopes, OTLP exports). It serves from a thread of its own, so a process the test
    stops synchronously can still deliver its last batch."""

    def __init__(self) -> None:
        bodies = self.bodies = []  # type: list[bytes]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":  # sentry-sdk's choice whenever brotli is importable
                    import brotli  # (locust's HTTP client brings it into the dev extras)

                    body = brotli.decompress(body)
                bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tool(name: str, package: str) -> str:
    """The path of a command-line tool a test runs; skipped without it, failed under
    ``BEM_REQUIRE_SERVICES=1`` (``.ci/run`` installs it)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package {package})"
        if REQUIRE_SERVICES:
            pytest.fail(f"BEM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return path


def exported_metrics() -> set[str]:
    """Every sample name BEM's registry can expose (counters, histograms and gauges)."""
    registry = Metrics(Build("test", "0123456789ab")).registry
    return {family.name + suffix for family in registry.collect() for suffix in SAMPLE_SUFFIXES}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bem_env(values: dict[str, str]) -> dict[str, str]:
    """This process's environment without its BEM_ settings, with ``values``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("BEM_")}, **values}


def migrated_admin(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """``bem migrate``, then the Authorization headers of a new admin (``bem users``)."""
    bem(["migrate"], env, cwd)
    token = bem(["users", "create-admin", "--email", "ops@example.com"], env, cwd).stdout
    return {"Authorization": f"Bearer {token.strip()}"}


def bem(
    args: list[str], env: dict[str, str], cwd: Path, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a ``bem`` command to completion; with ``check`` it must succeed."""
    r = subprocess.run(
        [sys.executable, "-m", "bem", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


def start_bem(
    env: dict[str, str],
    cwd: Path,
    port: int,
    *,
    capture: bool = False,
    command: str = "serve",
) -> subprocess.Popen[bytes]:
    """Start ``bem serve`` (or ``bem gateway``) on ``port``; ``wait_live`` waits for it."""
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "bem", command, "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=output,
        stderr=output,
    )


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Until something listens on 127.0.0.1:``port``; fails if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} did not listen on {port}") from None
            time.sleep(0.05)


def wait_live(proc: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    """Until ``/health/live`` on ``port`` answers 200; fails if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} did not start (exit code {proc.poll()})")
        time.sleep(0.1)


@contextmanager
def bem_server(
    env: dict[str, str], cwd: Path, *, capture: bool = False, command: str = "serve"
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ``bem serve`` (or ``bem gateway``) process on a spare port, ready (``/health/live``)
    before yielding; stopped (SIGTERM, then SIGKILL) afterwards."""
    port = free_port()
    proc = start_bem(env, cwd, port, capture=capture, command=command)
    try:
        wait_live(proc, port)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class OwnPostgres:
    """A throwaway PostgreSQL cluster (initdb/pg_ctl as the postgres user) on a spare port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bem-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        os.chmod(self.root, 0o755)  # noqa: S103 - the postgres user must reach its data
        pg = pwd.getpwnam("postgres")
        self.data.mkdir()
        os.chown(self.data, pg.pw_uid, pg.pw_gid)

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120
        )

    def init(self) -> None:
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.data / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )

    def configure(self, **values: str) -> None:
        """Settings for the next start (later lines of postgresql.auto.conf win)."""
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in values.items())

    def follow(self, primary: OwnPostgres, name: str) -> None:
        """Become a streaming replica of ``primary`` (``pg_basebackup -R``), known to it as
        ``name`` (what ``synchronous_standby_names`` lists), then start."""
        self.data.chmod(0o700)  # initdb sets this; pg_basebackup keeps what it finds
        self._as_postgres(
            str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
            "-U", "postgres", "-D", str(self.data), "-R", "-X", "stream",
        )  # fmt: skip
        conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={name}"
        # The copy carries the primary's settings: once promoted it must not wait for a
        # synchronous standby of its own.
        self.configure(primary_conninfo=conninfo, synchronous_standby_names="")
        self.start()

    def promote(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "promote")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def remove(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


class OwnPgBouncer:
    """A PgBouncer in transaction mode on a spare port, in front of the PostgreSQL at
    ``host:port`` (any database, trust auth); under root as the postgres user (PgBouncer
    refuses to run as root), else as whoever runs the tests."""

    def __init__(self, binary: str, host: str, port: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bem-pgbouncer-", dir="/tmp"))
        self.port = free_port()
        users = self.root / "users.txt"
        users.write_text('"root" ""\n"postgres" ""\n"bem" ""\n')
        self.ini = self.root / "pgbouncer.ini"
        self.ini.write_text(
            f"[databases]\n* = host={host} port={port}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n"
            "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
        )
        user = "postgres" if os.geteuid() == 0 else None
        if user is not None:
            pg = pwd.getpwnam(user)
            os.chmod(self.root, 0o755)  # noqa: S103 - the postgres user reads its files here
            for path in (self.root, users, self.ini):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        self.proc = subprocess.Popen(
            [binary, str(self.ini)],
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port, self.proc)
        except RuntimeError:
            log = self.log()
            self.remove()
            raise RuntimeError(f"pgbouncer did not start: {log}") from None

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def remove(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A private redis-server on a spare port, so stopping it harms nobody."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis(port=self.port, socket_timeout=0.2).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
