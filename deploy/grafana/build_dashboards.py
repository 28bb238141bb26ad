"""Write the Grafana dashboards (JSON, file-provisioned) from one description.

    python deploy/grafana/build_dashboards.py          # rewrite deploy/grafana/dashboards/
    python deploy/grafana/build_dashboards.py --check  # exit 1 when the JSON is stale

Panels are generated so the three dashboards stay consistent (same stages, same
percentiles, same datasource variable) and so the test suite can read every query back
from the JSON. Queries use Grafana's ``$__rate_interval`` and the ``$service`` variable.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Stage:
    metric: str  # histogram base name, without _bucket
    title: str


# Every per-stage latency histogram (seconds, shared buckets); see docs/operations.md.
STAGES = (
    Stage("voice_gateway_voice_to_voice_seconds", "Voice-to-voice (end of speech -> first audio)"),
    Stage("voice_asr_final_latency_seconds", "ASR: end of speech -> final transcript"),
    Stage("voice_asr_finalize_seconds", "ASR: end-of-utterance decision -> final"),
    Stage("voice_llm_ttft_seconds", "LLM: time to first token"),
    Stage("voice_llm_prefill_seconds", "LLM: system prompt prefill"),
    Stage("voice_tts_first_audio_seconds", "TTS: first text -> first audio"),
    Stage("voice_tts_segment_latency_seconds", "TTS: segment text -> its first audio"),
    Stage("voice_tts_synthesis_seconds", "TTS: synthesis time per segment"),
    Stage("voice_gateway_barge_in_stop_seconds", "Barge-in: interrupting speech -> audio stopped"),
    Stage(
        "voice_gateway_barge_in_audio_seconds",
        "Barge-in: interrupting speech -> last old audio written",
    ),
)
HEATMAP_STAGES = STAGES[0], STAGES[1], STAGES[3], STAGES[5]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    heatmap: bool = False


@dataclass
class Panel:
    title: str
    queries: list[Query]
    kind: str = "timeseries"  # timeseries | stat | heatmap
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def quantile(q: float, metric: str, by: str = "", sel: str = "") -> str:
    group = f"{by}, le" if by else "le"
    series = f"{metric}_bucket{{{sel}}}" if sel else f"{metric}_bucket"
    return f"histogram_quantile({q}, sum by ({group}) (rate({series}[{RATE}])))"


def percentiles(stage: Stage) -> Panel:
    return Panel(
        stage.title,
        [Query(quantile(q, stage.metric), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
        unit="s",
    )


def heatmap(stage: Stage) -> Panel:
    return Panel(
        f"{stage.title} (heatmap)",
        [Query(f"sum by (le) (rate({stage.metric}_bucket[{RATE}]))", "{{le}}", heatmap=True)],
        kind="heatmap",
        unit="s",
        extra={
            "options": {
                "calculate": False,
                "yAxis": {"unit": "s"},
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges"},
            }
        },
    )


def overview() -> list[Panel]:
    v2v = STAGES[0].metric
    return [
        Panel("Calls now", [Query("sum(voice_gateway_calls_active)", "calls")], "stat", width=6),
        Panel(
            "Voice-to-voice p50",
            [Query(quantile(0.5, v2v), "p50")],
            "stat",
            unit="s",
            width=6,
            extra={"fieldConfig": {"defaults": {"unit": "s", "thresholds": _SLO_THRESHOLDS}}},
        ),
        Panel(
            "Voice-to-voice p95",
            [Query(quantile(0.95, v2v), "p95")],
            "stat",
            unit="s",
            width=6,
            extra={"fieldConfig": {"defaults": {"unit": "s", "thresholds": _SLO_THRESHOLDS}}},
        ),
        Panel(
            "Capacity used",
            [
                Query(
                    'sum(voice_sessions_active{service=~"asr|llm|tts"}) '
                    '/ sum(voice_session_capacity{service=~"asr|llm|tts"})',
                    "used",
                )
            ],
            "stat",
            unit="percentunit",
            width=6,
        ),
        Panel(
            "Calls started per minute",
            [
                Query(
                    f"sum by (endpoint) (rate(voice_gateway_calls_total[{RATE}])) * 60",
                    "{{endpoint}}",
                )
            ],
        ),
        Panel(
            "Active calls and sessions",
            [
                Query("sum by (endpoint) (voice_gateway_calls_active)", "calls {{endpoint}}"),
                Query(
                    'sum by (service) (voice_sessions_active{service=~"asr|llm|tts"})',
                    "{{service}} sessions",
                ),
            ],
        ),
        Panel(
            "Errors by service and code (per second)",
            [
                Query(
                    f"sum by (service, code) (rate(voice_errors_total[{RATE}]))",
                    "{{service}} {{code}}",
                )
            ],
        ),
        Panel(
            "Calls refused by reason (per second)",
            [
                Query(
                    f"sum by (reason) (rate(voice_gateway_calls_rejected_total[{RATE}]))",
                    "{{reason}}",
                )
            ],
        ),
        Panel(
            "Capacity: free sessions per service",
            [
                Query(
                    "sum by (service) (clamp_min("
                    'voice_session_capacity{service=~"asr|llm|tts"} - voice_sessions_active, 0))',
                    "{{service}}",
                )
            ],
        ),
        Panel(
            "Per-stage latency p95",
            [Query(quantile(0.95, s.metric), s.metric.split("_")[1]) for s in HEATMAP_STAGES],
            unit="s",
        ),
    ]


_SLO_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "green", "value": None},
        {"color": "orange", "value": 1.0},
        {"color": "red", "value": 2.0},
    ],
}


def latency() -> list[Panel]:
    panels = [percentiles(stage) for stage in STAGES]
    panels += [heatmap(stage) for stage in HEATMAP_STAGES]
    panels += [
        Panel(
            "Engine real-time factor p50 / p95",
            [
                Query(
                    quantile(q, "voice_engine_real_time_factor", "service"), f"{{{{service}}}} p{p}"
                )
                for q, p in ((0.5, 50), (0.95, 95))
            ],
        ),
        Panel(
            "ASR decode time p95 by kind",
            [Query(quantile(0.95, "voice_asr_decode_seconds", "kind"), "{{kind}}")],
            unit="s",
        ),
        Panel(
            "LLM decode speed p50",
            [Query(quantile(0.5, "voice_llm_tokens_per_second"), "tokens/s")],
        ),
        Panel(
            "Turns answered within the 1 s voice-to-voice budget",
            [
                Query(
                    f'sum(rate(voice_gateway_voice_to_voice_seconds_bucket{{le="1.0"}}[{RATE}])) '
                    f"/ sum(rate(voice_gateway_voice_to_voice_seconds_count[{RATE}]))",
                    "share",
                )
            ],
            unit="percentunit",
        ),
    ]
    return panels


def capacity() -> list[Panel]:
    sel = 'service=~"$service"'
    return [
        Panel(
            "Active sessions per replica",
            [Query(f"sum by (service, instance) (voice_sessions_active{{{sel}}})", "{{instance}}")],
        ),
        Panel(
            "Sessions per replica (autoscaling signal) vs capacity",
            [
                Query(
                    f"sum by (service) (voice_sessions_active{{{sel}}}) "
                    f"/ count by (service) (voice_session_capacity{{{sel}}})",
                    "{{service}} active / replica",
                ),
                Query(
                    f"max by (service) (voice_session_capacity{{{sel}}})",
                    "{{service}} capacity / replica",
                ),
            ],
        ),
        Panel(
            "Replicas",
            [Query(f"count by (service) (voice_session_capacity{{{sel}}})", "{{service}}")],
        ),
        Panel(
            "Assignments by result (per second)",
            [
                Query(
                    f"sum by (service, result) (rate(voice_assignments_total{{{sel}}}[{RATE}]))",
                    "{{service}} {{result}}",
                )
            ],
        ),
        Panel(
            "NATS messages per second by subject family",
            [
                Query(
                    "sum by (service, direction, family) "
                    f"(rate(voice_bus_messages_total{{{sel}}}[{RATE}]))",
                    "{{service}} {{direction}} {{family}}",
                )
            ],
        ),
        Panel(
            "NATS bytes per second by subject family",
            [
                Query(
                    "sum by (service, direction, family) "
                    f"(rate(voice_bus_bytes_total{{{sel}}}[{RATE}]))",
                    "{{service}} {{direction}} {{family}}",
                )
            ],
            unit="Bps",
        ),
        Panel(
            "Dropped messages by reason (per second)",
            [
                Query(
                    f"sum by (service, reason) (rate(voice_dropped_total{{{sel}}}[{RATE}]))",
                    "{{service}} {{reason}}",
                )
            ],
        ),
        Panel(
            "NATS slow consumers and reconnects",
            [
                Query(
                    f"sum by (service) (increase(voice_nats_slow_consumers_total{{{sel}}}[{RATE}]))",
                    "{{service}} slow consumer",
                ),
                Query(
                    f"sum by (service) (increase(voice_nats_reconnects_total{{{sel}}}[{RATE}]))",
                    "{{service}} reconnect",
                ),
            ],
        ),
        Panel(
            "Engine real-time factor p95",
            [
                Query(
                    quantile(0.95, "voice_engine_real_time_factor", "service", sel),
                    "{{service}}",
                )
            ],
        ),
        Panel(
            "Resident memory per process",
            [Query('process_resident_memory_bytes{job=~"voice-.*"}', "{{job}} {{instance}}")],
            unit="bytes",
        ),
        Panel(
            "CPU per process (cores)",
            [
                Query(
                    f'rate(process_cpu_seconds_total{{job=~"voice-.*"}}[{RATE}])',
                    "{{job}} {{instance}}",
                )
            ],
        ),
    ]


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "datasource": DS,
            "refId": chr(ord("A") + i),
            "expr": q.expr,
            "legendFormat": q.legend,
            **({"format": "heatmap"} if q.heatmap else {}),
        }
        for i, q in enumerate(panel.queries)
    ]
    body: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": targets,
    }
    body.update(panel.extra)
    return body


def dashboard(uid: str, title: str, panels: list[Panel], *, service_var: bool) -> dict[str, Any]:
    laid: list[dict[str, Any]] = []
    x = y = row_h = 0
    for pid, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_h = 0, y + row_h, 0
        laid.append(_panel_json(panel, pid, x, y))
        x += panel.width
        row_h = max(row_h, panel.height)
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        }
    ]
    if service_var:
        variables.append(
            {
                "name": "service",
                "label": "Service",
                "type": "query",
                "datasource": DS,
                "query": {"query": "label_values(voice_sessions_active, service)", "refId": "S"},
                "definition": "label_values(voice_sessions_active, service)",
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "refresh": 2,
                "hide": 0,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["voice"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["voice"], "asDropdown": True, "title": "Voice"}],
        "panels": laid,
    }


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        "voice-overview.json": dashboard(
            "voice-overview", "Voice: overview", overview(), service_var=False
        ),
        "voice-latency.json": dashboard(
            "voice-latency", "Voice: latency per stage", latency(), service_var=False
        ),
        "voice-capacity.json": dashboard(
            "voice-capacity", "Voice: capacity per service", capacity(), service_var=True
        ),
    }


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the JSON is stale")
    args = parser.parse_args()
    stale = []
    for name, board in dashboards().items():
        path = OUT / name
        text = render(board)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
