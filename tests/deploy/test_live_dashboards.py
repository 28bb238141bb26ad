"""Screenshot check: a real Prometheus scrapes a real stack through one short call, then
every dashboard panel's queries are evaluated against it and must return data.

Also lints every service's live ``/metrics`` with ``promtool check metrics``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.stack.bella_client import BellaCall
from services.stack.runner import running_stack
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.deploy.dashboards import panel_queries
from tests.deploy.prometheus import LocalPrometheus, finite_values, poll_until
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration]

API_KEY = "dashboards-test-key"
WORKERS = ("asr", "llm", "tts")
# A single call without interruption cannot produce a barge-in: its histograms exist
# (zero observations, so their quantiles are NaN) but cannot have a value.
NEEDS_BARGE_IN = "voice_gateway_barge_in_"


def _start_payload() -> dict[str, Any]:
    return {
        "format": "pcm",
        "sample_rate": 16000,
        "enable_intermediate_result": True,
        "llm_option": {
            "main": {
                "model": "default",
                "temperature": 0.2,
                "sys_prompt": "Answer in at most five words.",
            }
        },
        "tts_option": {"sample_rate": 24000},
    }


def _promtool_check_metrics(text: str) -> str:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool not found: install Debian's prometheus package"
    result = subprocess.run(
        [binary, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return (result.stdout + result.stderr).strip() if result.returncode else ""


async def test_every_dashboard_panel_has_data_after_a_call(nats_server: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="speech-") as speech_dir:
        question = synthesize("What is the capital of France?", Path(speech_dir))
    health = {svc: free_port() for svc in WORKERS}
    gateway_port = free_port()
    targets = {"voice-gateway": f"127.0.0.1:{gateway_port}"}
    targets |= {f"voice-{svc}": f"127.0.0.1:{port}" for svc, port in health.items()}
    prometheus = LocalPrometheus(targets, scrape_interval_s=1.0)
    prometheus.start()
    await prometheus.wait_ready()
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=nats_server.url,
        gateway_port=gateway_port,
        api_keys=(API_KEY,),
        extra_env={f"{svc.upper()}_HEALTH_PORT": str(port) for svc, port in health.items()},
    )
    try:
        async with running_stack(options, echo=lambda line: None) as stack:

            async def all_up() -> bool:
                return len(await prometheus.query("up == 1")) == len(targets)

            await poll_until(all_up, 30, "every target scraped")

            # Each live /metrics endpoint passes promtool's lint.
            async with httpx.AsyncClient(timeout=5.0) as client:
                for job, target in targets.items():
                    body = (await client.get(f"http://{target}/metrics")).text
                    assert "voice_" in body, job
                    assert _promtool_check_metrics(body) == "", job

            call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
            try:
                started = await call.start(_start_payload())
                assert started.name == "TranscriptionStarted", started.header
                await call.send_audio(question + silence(1.2))
                await call.wait_for(lambda r: r.name == "TTS_END", timeout_s=90)
                await call.stop(timeout_s=60)
            finally:
                await call.aclose()

            async def call_scraped() -> bool:
                counts = (
                    "voice_gateway_voice_to_voice_seconds_count",
                    "voice_asr_final_latency_seconds_count",
                    "voice_llm_ttft_seconds_count",
                    "voice_tts_first_audio_seconds_count",
                )
                for name in counts:
                    if not await prometheus.query(f"{name} > 0"):
                        return False
                # The call's end too (sessions closed), so gauges show the idle state.
                return not await prometheus.query("voice_sessions_active > 0")

            await poll_until(call_scraped, 30, "the call's metrics scraped")

            empty, no_value = [], []
            for query in panel_queries():
                result = await prometheus.query(query.expr)
                if not result:
                    empty.append(query.name)
                elif not finite_values(result) and NEEDS_BARGE_IN not in query.expr:
                    no_value.append(f"{query.name}: {query.expr}")
            assert empty == [], "panels without data"
            assert no_value == [], "panels with only NaN"
    finally:
        prometheus.stop()
