"""Per-level summaries (percentiles, pipeline overhead, verdict) and the PNG plot."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.loadgen.client import ClientResult

STAGES = (
    "voice_to_voice_ms",
    "endpoint_to_audio_ms",
    "endpoint_to_final_ms",
    "final_to_delta_ms",
    "delta_to_audio_ms",
)


class FixedDelays(BaseModel):
    """What the fixed-delay engines were told to take (ms); the pipeline adds the rest."""

    vad_silence_ms: int
    asr_final_ms: float
    llm_ttft_ms: float
    tts_ttfb_ms: float

    @property
    def endpoint_to_audio_ms(self) -> float:
        return self.asr_final_ms + self.llm_ttft_ms + self.tts_ttfb_ms


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the same rule as bench/latency.py)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1) if values else float("nan"),
        "n": len(values),
    }


def _cost_per_frame(cpu: dict[str, float], frames_per_s: float) -> dict[str, float]:
    """CPU microseconds each process spends per client audio frame.

    Nearly independent of how busy the machine is (unlike latency), so it says how
    many frames per second, hence calls, one core could carry for that process.
    """
    if frames_per_s <= 0:
        return {}
    return {
        name: round(pct / 100 * 1e6 / frames_per_s, 1)
        for name, pct in cpu.items()
        if name not in ("machine", "machine_capacity", "other")
    }


def summarize_level(
    calls: int,
    results: list[ClientResult],
    *,
    delays: FixedDelays | None,
    duration_s: float,
    cpu: dict[str, float],
    limit_ms: float,
) -> dict[str, Any]:
    turns = [t for r in results for t in r.turns]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    latency = {s: stats([getattr(t, s) for t in turns]) for s in STAGES}
    frames_per_s = sum(r.frames_sent for r in results) / duration_s
    level: dict[str, Any] = {
        "calls": calls,
        "client_procs": len(results),
        "calls_started": sum(r.calls_started for r in results),
        "calls_completed": sum(r.calls_completed for r in results),
        "turns": len(turns),
        "errors": dict(errors),
        "error_total": sum(errors.values()),
        "latency_ms": latency,
        "frames_per_s": round(frames_per_s, 1),
        "client_pacer_late_ms": {
            k: round(max((r.pacer_late_ms[k] for r in results), default=math.nan), 1)
            for k in ("p50", "p99", "max")
        },
        "cpu_pct_of_core": cpu,
        "cpu_us_per_client_frame": _cost_per_frame(cpu, frames_per_s),
    }
    if delays is not None:
        configured = delays.endpoint_to_audio_ms
        level["pipeline_added_ms"] = stats([t.endpoint_to_audio_ms - configured for t in turns])
        level["pipeline_added_by_hop_ms"] = {
            "asr_to_client_final": stats(
                [t.endpoint_to_final_ms - delays.asr_final_ms for t in turns]
            ),
            "final_to_llm_delta": stats([t.final_to_delta_ms - delays.llm_ttft_ms for t in turns]),
            "delta_to_tts_audio": stats([t.delta_to_audio_ms - delays.tts_ttfb_ms for t in turns]),
        }
        value = level["pipeline_added_ms"]["p99"]
    else:
        value = latency["voice_to_voice_ms"]["p95"]
    level["meets_target"] = bool(turns and level["error_total"] == 0 and value <= limit_ms)
    return level


def plot(report: dict[str, Any], out: Path) -> None:
    """Latency percentiles (and CPU) against concurrency; Agg backend, no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    x = [lv["calls"] for lv in levels]
    fig, (ax, ax_cpu) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    key = "pipeline_added_ms" if report["mode"] == "fixed" else None
    for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        ax.plot(
            x,
            [lv["latency_ms"]["voice_to_voice_ms"][q] for lv in levels],
            style,
            label=f"voice-to-voice {q}",
        )
        if key:
            ax.plot(x, [lv[key][q] for lv in levels], style + "-", label=f"pipeline added {q}")
    target = report["target"]
    ax.axhline(target["limit_ms"], color="red", linestyle=":", label=target["description"])
    for lv in levels:
        if lv["error_total"]:
            ax.annotate(
                f"{lv['error_total']} err",
                (lv["calls"], target["limit_ms"]),
                color="red",
                fontsize=8,
            )
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title(
        f"{report['mode']} engines, {report['replicas']} replica(s) per worker, "
        f"1 gateway; {report['machine']['cores']} cores"
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    names = [n for n in levels[-1]["cpu_pct_of_core"] if n not in ("machine", "machine_capacity")]
    for name in names:
        ax_cpu.plot(x, [lv["cpu_pct_of_core"].get(name, 0.0) for lv in levels], "o-", label=name)
    ax_cpu.set_ylabel("CPU, % of one core")
    ax_cpu.set_xlabel("concurrent calls")
    ax_cpu.legend(fontsize=8, ncol=3)
    ax_cpu.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
