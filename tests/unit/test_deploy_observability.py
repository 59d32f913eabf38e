"""Dashboards, Alertmanager and log-shipping configuration: valid, and every PromQL query in
a dashboard names only metrics BEM exports or recording rules it defines."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers import exported_metrics, tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def exported_and_recorded() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "bem.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return exported_metrics() | recorded


def test_every_dashboard_query_names_a_metric_bem_exports() -> None:
    known = exported_and_recorded()
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert {d.stem for d in dashboards} >= {
        "bem-api-slo",
        "bem-database",
        "bem-uploads",
        "bem-live",
    }
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == path.stem
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        assert exprs, path.name
        for expr in exprs:
            names = set(re.findall(r"\b(bem[_:][A-Za-z0-9_:]+)", expr))
            assert names, f"{path.name}: {expr} names no BEM metric"
            assert names <= known, f"{path.name}: unknown {names - known} in {expr}"


def test_alertmanager_config_is_valid() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    result = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "bem.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    inhibitions = yaml.safe_load(config.read_text())["inhibit_rules"]
    named = {m.split('"')[1] for rule in inhibitions for m in rule["source_matchers"]}
    assert named <= alerts  # inhibitions refer to alerts that exist


def test_log_shipping_and_grafana_provisioning_parse() -> None:
    promtail = yaml.safe_load((DEPLOY / "promtail" / "promtail.yml").read_text())
    stages = promtail["scrape_configs"][0]["pipeline_stages"]
    fields = next(s["json"]["expressions"] for s in stages if "json" in s)
    assert {"level", "request_id", "trace_id", "timestamp"} <= set(fields)
    for path in (DEPLOY / "loki" / "loki.yml", *sorted((DEPLOY / "grafana").rglob("*.yml"))):
        assert yaml.safe_load(path.read_text()), path
