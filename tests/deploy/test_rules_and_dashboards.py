"""Prometheus rules, their unit tests, and the dashboards' PromQL, checked with promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.settings import project_root
from tests.deploy.dashboards import dashboard_files, panel_queries

PROM = project_root() / "deploy" / "prometheus"


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: install Debian's prometheus package (./run setup)")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", str(PROM / "rules" / "voice.rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "tests/voice.rules.test.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_local_scrape_config_is_valid() -> None:
    result = _promtool("check", "config", "prometheus.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    rules = yaml.safe_load((PROM / "rules" / "voice.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROM / "tests" / "voice.rules.test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])}
    # Reconnect flapping and refused calls are plain rate thresholds; everything else
    # (quantiles, ratios, absence) has a test that fires it.
    assert alerts - tested <= {"VoiceNatsReconnecting", "VoiceCallsRefused"}


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel query wrapped as a recording rule, so promtool parses the PromQL."""
    queries = panel_queries()
    assert len(queries) > 30
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard_query_{i}", "expr": q.expr}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_provisionable() -> None:
    names = [p.name for p in dashboard_files()]
    assert names == ["voice-capacity.json", "voice-latency.json", "voice-overview.json"]
    uids = set()
    for path in dashboard_files():
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
    assert len(uids) == 3
    provider = yaml.safe_load(
        (project_root() / "deploy/grafana/provisioning/dashboards/voice.yml").read_text()
    )
    assert provider["providers"][0]["type"] == "file"


def test_dashboards_match_their_generator() -> None:
    script = project_root() / "deploy" / "grafana" / "build_dashboards.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
