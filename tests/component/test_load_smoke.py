"""The load generator runs end to end in fixed-delay mode and writes a complete report.

Two calls for a few seconds through a real gateway, NATS and the bench-only fixed-delay
replicas; the test checks the report's shape and that nothing failed, never timings.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="speech fixtures need espeak-ng and sox",
)

LEVEL_FIELDS = {
    "calls",
    "client_procs",
    "calls_started",
    "calls_completed",
    "turns",
    "errors",
    "error_total",
    "latency_ms",
    "frames_per_s",
    "client_pacer_late_ms",
    "cpu_pct_of_core",
    "pipeline_added_ms",
    "pipeline_added_by_hop_ms",
    "meets_target",
}
STAGES = {
    "voice_to_voice_ms",
    "endpoint_to_audio_ms",
    "endpoint_to_final_ms",
    "final_to_delta_ms",
    "delta_to_audio_ms",
}


def test_fixed_mode_load_run_writes_a_clean_report(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        "--mode",
        "fixed",
        "--levels",
        "2",
        "--duration",
        "6",
        "--ramp",
        "0.2",
        "--gap",
        "1.5",
        "--out",
        str(out),
    ]
    with subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # SIGTERM lets the benchmark stop its stack; its children are in other sessions.
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
            pytest.fail(f"the load run did not finish in time: {stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert report["mode"] == "fixed" and report["replicas"] == 1
    assert set(report["config"]["fixed_delays"]) == {
        "vad_silence_ms",
        "asr_final_ms",
        "llm_ttft_ms",
        "tts_ttfb_ms",
    }
    [level] = report["levels"]
    assert LEVEL_FIELDS <= set(level)
    assert level["calls"] == 2 and level["calls_started"] == 2 and level["calls_completed"] == 2
    assert level["errors"] == {} and level["error_total"] == 0
    assert level["turns"] >= 1
    assert set(level["latency_ms"]) == STAGES
    assert level["latency_ms"]["voice_to_voice_ms"]["n"] == level["turns"]
    assert {"gateway", "nats", "asr-1", "llm-1", "tts-1", "clients", "machine"} <= set(
        level["cpu_pct_of_core"]
    )
