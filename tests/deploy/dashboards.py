"""Read the provisioned Grafana dashboards back: every panel query, ready to evaluate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.settings import project_root

DASHBOARDS = project_root() / "deploy" / "grafana" / "dashboards"

# What Grafana substitutes at query time; here a window wide enough for a short test run.
_SUBSTITUTIONS = {"$__rate_interval": "5m", "$service": ".*"}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str  # with Grafana variables substituted

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panel_queries() -> list[PanelQuery]:
    queries = []
    for path in dashboard_files():
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for var, value in _SUBSTITUTIONS.items():
                    expr = expr.replace(var, value)
                if "$" in expr:
                    raise ValueError(f"{path.name}: unknown variable in {target['expr']!r}")
                queries.append(PanelQuery(path.stem, panel["title"], target["refId"], expr))
    return queries
