"""The production topology, natively: nginx (``deploy/nginx``) in front of two ``bem serve``
processes and ``bem gateway``, a ``bem worker``, PgBouncer, PostgreSQL, Redis and an S3 API
(source files), on spare ports of 127.0.0.1 (docs/operations.md, "Production topology")."""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from tests.helpers import bem, free_port, start_bem, stop, wait_live, wait_port

DEPLOY = Path(__file__).parents[1] / "deploy" / "nginx"
TEMPLATE = DEPLOY / "templates" / "bem.conf.template"
MAKE_CERT = DEPLOY / "make-dev-cert.sh"

# What the official nginx image's nginx.conf provides around the template (one worker per
# core, logs and temporary files in the instance's own directory).
MAIN_CONF = """daemon off;
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    include {root}/bem.conf;
}}
"""

UPSTREAMS = """upstream bem_api {{
    zone bem_api 64k;
{api}
    keepalive 32;
}}
upstream bem_gateway {{
    zone bem_gateway 64k;
    server 127.0.0.1:{gateway} max_fails=2 fail_timeout=3s;
}}
"""


def render(template: str, values: Mapping[str, str]) -> str:
    """``${BEM_...}`` replaced as envsubst would; a variable without a value is an error."""
    return re.sub(r"\$\{(BEM_[A-Z_]+)\}", lambda m: values[m.group(1)], template)


class Nginx:
    """An nginx instance of ``deploy/nginx`` in front of the ``api`` and ``gateway`` ports;
    ``rate``, ``burst`` and ``connections`` are its per-address edge limits."""

    def __init__(
        self,
        binary: str,
        api: list[int],
        gateway: int,
        *,
        rate: str = "2000r/s",
        burst: int = 4000,
        connections: int = 1000,
    ) -> None:
        # Started as root, nginx's workers run as nobody: they must reach its temporary files.
        self.binary = binary
        self.root = root = Path(tempfile.mkdtemp(prefix="bem-nginx-", dir="/tmp"))
        root.chmod(0o755)
        (root / "tmp").mkdir()
        subprocess.run(["sh", str(MAKE_CERT), str(root / "tls")], check=True, capture_output=True)
        self.cert = root / "tls" / "tls.crt"
        self.http_port, self.https_port = free_port(), free_port()
        servers = "\n".join(
            f"    server 127.0.0.1:{port} max_fails=2 fail_timeout=3s;" for port in api
        )
        (root / "upstreams.conf").write_text(UPSTREAMS.format(api=servers, gateway=gateway))
        values = {
            "BEM_NGINX_HTTP_PORT": str(self.http_port),
            "BEM_NGINX_HTTPS_PORT": str(self.https_port),
            "BEM_NGINX_TLS_DIR": str(root / "tls"),
            "BEM_NGINX_UPSTREAMS": str(root / "upstreams.conf"),
            "BEM_NGINX_LOG_DIR": str(root),
            "BEM_NGINX_RATE": rate,
            "BEM_NGINX_BURST": str(burst),
            "BEM_NGINX_CONNECTIONS": str(connections),
        }
        (root / "bem.conf").write_text(render(TEMPLATE.read_text(), values))
        (root / "nginx.conf").write_text(MAIN_CONF.format(root=root))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts this instance's certificate."""
        return ssl.create_default_context(cafile=str(self.cert))

    def command(self) -> list[str]:
        return [self.binary, "-p", str(self.root), "-e", str(self.root / "error.log")]

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on this configuration."""
        args = [*self.command(), "-c", str(self.root / "nginx.conf"), "-t"]
        return subprocess.run(args, capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        args = [*self.command(), "-c", str(self.root / "nginx.conf")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.https_port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text() if path.exists() else ""

    def access_log(self) -> list[dict[str, Any]]:
        path = self.root / "access.log"
        lines = path.read_bytes().splitlines() if path.exists() else []
        return [orjson.loads(line) for line in lines]


@dataclass
class Topology:
    """The running stack; ``api`` processes can be killed and started again on their ports."""

    root: Path
    env: dict[str, str]
    nginx: Nginx
    api_ports: list[int]
    gateway_port: int
    headers: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_api(self, index: int) -> None:
        port = self.api_ports[index]
        self.procs[f"api{index}"] = start_bem(self.env, self.root, port)
        wait_live(self.procs[f"api{index}"], port)

    def start_gateway(self) -> None:
        self.procs["gateway"] = start_bem(self.env, self.root, self.gateway_port, command="gateway")
        wait_live(self.procs["gateway"], self.gateway_port)


@contextmanager
def topology(
    database_url: str,
    bouncer_port: int,
    redis_url: str,
    storage_url: str,
    nginx_binary: str,
    root: Path,
) -> Iterator[Topology]:
    """Start everything on ``database_url`` (migrated) through the PgBouncer on
    ``bouncer_port``, with source files at ``storage_url`` (the ``AWS_*`` settings of this
    process lead to it); stop everything afterwards."""
    bounced = make_url(database_url).set(host="127.0.0.1", port=bouncer_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    env |= {
        "BEM_DATABASE_URL": bounced.render_as_string(hide_password=False),
        "BEM_DB_PGBOUNCER": "true",
        "BEM_REDIS_URL": redis_url,
        "BEM_REDIS_KEY_PREFIX": f"bemtopo{uuid.uuid4().hex[:8]}",
        "BEM_JOB_QUEUE": "redis",
        "BEM_STORAGE_URL": storage_url,
        "BEM_STORAGE_DIR": str(root / "no-local-sources"),  # must stay empty
        "BEM_TRUSTED_PROXIES": '["127.0.0.1/32"]',
        "BEM_RATE_LIMIT_DEFAULT": "100000/minute",  # load from one address, one user
        "BEM_RATE_LIMIT_IP_CEILING": "100000/minute",
        "BEM_FEED_POLL_S": "0.1",
        "BEM_SHUTDOWN_TIMEOUT": "10",
        "BEM_LOG_LEVEL": "WARNING",
    }
    token = bem(["users", "create-admin", "--email", "ops@example.com"], env, root)
    api_ports, gateway_port = [free_port(), free_port()], free_port()
    nginx = Nginx(nginx_binary, api_ports, gateway_port)
    stack = Topology(
        root=root,
        env=env,
        nginx=nginx,
        api_ports=api_ports,
        gateway_port=gateway_port,
        headers={"Authorization": f"Bearer {token.stdout.strip()}"},
    )
    with ExitStack() as cleanup:
        cleanup.callback(lambda: [stop(p) for p in stack.procs.values()])
        cleanup.callback(nginx.remove)
        worker_log = (root / "worker.log").open("wb")
        cleanup.callback(worker_log.close)
        stack.procs["worker"] = subprocess.Popen(
            [sys.executable, "-m", "bem", "worker"],
            env=env,
            cwd=root,
            stdout=worker_log,
            stderr=worker_log,
        )
        for index, port in enumerate(api_ports):
            stack.procs[f"api{index}"] = start_bem(env, root, port)
        stack.procs["gateway"] = start_bem(env, root, gateway_port, command="gateway")
        for name, port in (("api0", api_ports[0]), ("api1", api_ports[1])):
            wait_live(stack.procs[name], port)
        wait_live(stack.procs["gateway"], gateway_port)
        nginx.start()
        yield stack
