"""The container deployment, checked statically (no Docker engine runs here): the compose file
is valid for every profile, wires every file the observability stack reads, and runs what
Prometheus scrapes; the Dockerfile passes hadolint and copies files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.helpers import tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROFILES = ("monitoring", "logging")
REQUIRED_ENV = {"BEM_SMTP_HOST": "smtp.example.com", "BEM_MAIL_FROM": "BEM <bem@example.com>"}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = tool("docker-compose", "docker-compose")
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *profiles, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env if env is not None else REQUIRED_ENV)},
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, paths absolute)."""
    result = compose("config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path or volume name ("source:target[:mode]")."""
    pairs = (volume.split(":")[:2] for volume in service.get("volumes", []))
    return {target: source for source, target in pairs}


def secret_names(service: dict[str, Any]) -> set[str]:
    """Where the service finds its secrets, under /run/secrets."""
    return {
        s if isinstance(s, str) else s.get("target", s["source"])
        for s in service.get("secrets", [])
    }


def test_compose_is_valid_and_names_what_it_needs() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr
    # Without the mail settings production refuses to start, so compose refuses first.
    result = compose("config", "-q", env={})
    assert result.returncode != 0 and "BEM_SMTP_HOST" in result.stderr


def test_every_mounted_file_and_secret_is_where_the_services_read_it(
    resolved: dict[str, Any],
) -> None:
    for name, service in resolved["services"].items():
        for source in map(Path, mounts(service).values()):
            if source.is_relative_to(ROOT):
                assert source.exists(), f"{name} mounts {source}, which does not exist"
    secrets = {Path(s["file"]).name for s in resolved["secrets"].values()}
    assert {"bem_secret_key", "bem_database_url"} <= secrets  # what Settings reads

    grafana = mounts(resolved["services"]["grafana"])
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/bem.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert Path(grafana[path]) == DEPLOY / "grafana" / "dashboards"
    assert Path(grafana["/etc/grafana/provisioning"]) == DEPLOY / "grafana" / "provisioning"


def test_prometheus_scrapes_services_that_compose_runs(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [
        (job["job_name"], target)
        for job in prometheus["scrape_configs"]
        for config in job.get("static_configs", [])
        for target in config["targets"]
    ] + [
        (job["job_name"], f"{name}:{config['port']}")
        for job in prometheus["scrape_configs"]
        for config in job.get("dns_sd_configs", [])
        for name in config["names"]
    ]
    for job, target in targets:
        if job == "blackbox-tls":  # the public URL, probed through the exporter
            assert urlsplit(target).scheme == "https"
            continue
        host, port = target.rsplit(":", 1)
        assert host in services, f"{job} scrapes {host}, which compose does not run"
        environment = services[host].get("environment", {})
        if "BEM_WORKER_METRICS_PORT" in environment:
            assert environment["BEM_WORKER_METRICS_PORT"] == port
        elif "BEM_PORT" in environment:
            assert environment["BEM_PORT"] == port
    bem = {host.split(":")[0] for job, host in targets if job.startswith("bem-")}
    assert bem == {"api", "gateway", "worker"}


def test_bem_services_run_in_production_with_logs_shipped(resolved: dict[str, Any]) -> None:
    promtail = yaml.safe_load((DEPLOY / "promtail" / "promtail.yml").read_text())
    (selector,) = promtail["scrape_configs"][0]["docker_sd_configs"][0]["filters"][0]["values"]
    label, value = selector.split("=")
    for name in ("migrate", "api", "gateway", "worker"):
        service = resolved["services"][name]
        assert service["environment"]["BEM_PROFILE"] == "production"
        assert service["labels"][label] == value, f"{name}'s logs would not be shipped"
    assert resolved["services"]["loki"]["profiles"] == ["logging"]
    assert resolved["services"]["promtail"]["profiles"] == ["logging"]


def test_dockerfile_passes_hadolint_and_copies_what_exists() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")  # from the dev extras
    dockerfile = DEPLOY / "Dockerfile"
    result = subprocess.run(
        [str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sources = re.findall(r"^COPY (.+) \S+$", dockerfile.read_text(), re.MULTILINE)
    copied = [name for line in sources for name in line.split()]
    assert copied and all((ROOT / name).exists() for name in copied)
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert set(copied) <= allowed, "the build context leaves out a file the image copies"


def test_only_nginx_is_published_and_it_is_wired_to_what_runs(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    core = {name for name, s in services.items() if not s.get("profiles")}
    assert {name for name in core if services[name].get("ports")} == {"nginx"}
    nginx = services["nginx"]
    template = (DEPLOY / "nginx" / "templates" / "bem.conf.template").read_text()
    assert set(re.findall(r"\$\{(BEM_[A-Z_]+)\}", template)) <= set(nginx["environment"])
    upstreams = (DEPLOY / "nginx" / "upstreams.conf").read_text()
    for name in ("api", "gateway"):
        assert f"server {name}:{services[name]['environment']['BEM_PORT']} " in upstreams
    assert services["api"]["deploy"]["replicas"] == 2
    address = nginx["networks"]["default"]["ipv4_address"]
    for name in ("api", "gateway", "worker"):
        environment = services[name]["environment"]
        assert environment["BEM_TRUSTED_PROXIES"] == f'["{address}/32"]'
        assert environment["BEM_DB_PGBOUNCER"] == "true"
    # Every BEM process shares the object store (and can read its credentials).
    for name in ("api", "gateway", "worker", "migrate"):
        service = services[name]
        assert service["environment"]["BEM_STORAGE_URL"].startswith("s3://bem/")
        assert service["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
        credentials = service["environment"]["AWS_SHARED_CREDENTIALS_FILE"]
        assert credentials.removeprefix("/run/secrets/") in secret_names(service)
    # Migrations (and backups run as `compose run migrate bem backup`) skip PgBouncer.
    assert services["migrate"]["environment"]["BEM_DB_PGBOUNCER"] == "false"
    ini = (DEPLOY / "pgbouncer" / "pgbouncer.ini").read_text()
    assert "pool_mode = transaction" in ini and "listen_port = 6432" in ini
