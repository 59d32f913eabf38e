"""The Prometheus configuration, recording rules and alerts are valid; every alert has a
runbook and a promtool unit test; every BEM metric the rules use is one the app exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers import exported_metrics, tool

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "bem.yml"
TESTS = PROM / "tests" / "bem.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = tool("promtool", "prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_config_and_rules_and_the_unit_tests_pass() -> None:
    for args in (
        ("check", "config", str(PROM / "prometheus.yml")),
        ("check", "rules", str(RULES)),
        ("test", "rules", str(TESTS)),
    ):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_and_a_unit_test() -> None:
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text()))
    for alert in alerts():
        name = str(alert["alert"])
        runbook = alert["annotations"]["runbook_url"]  # type: ignore[index]
        assert (ROOT / runbook).is_file(), f"{name}: runbook {runbook} is missing"
        assert name in tested, f"{name} has no promtool unit test"


def test_rules_use_only_metrics_bem_exports() -> None:
    used = set(re.findall(r"\b(bem_[a-z_]+)", RULES.read_text()))
    assert used - exported_metrics() == set()
