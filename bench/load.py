"""Load and capacity: N concurrent calls with real speech through one gateway.

    ./run bench load [--mode fixed|real] [--levels 10,50,100] [--duration 30] ...
    python -m bench.load --mode fixed --replicas 2

Starts its own stack (NATS, ``--replicas`` replicas of each worker, ``--gateways``
gateways), then
for each level of concurrency runs client processes that place that many calls. Every
call streams espeak-ng speech and silence in real time in ``--frame-ms`` frames, one
question per turn, and measures from the client's side of the socket:

* voice_to_voice: the frame with the utterance's last voiced audio sent -> first reply
  audio received (what the caller hears as the assistant's reaction time)
* endpoint_to_audio: the frame that completes the end-of-turn silence sent -> first
  reply audio (voice_to_voice less the VAD's silence window)
* endpoint_to_final, final_to_delta, delta_to_audio: the same split at SentenceEnd and
  the first LLM_CHAT_DELTA

``--mode fixed`` replaces the ASR/LLM/TTS replicas with `bench.fixed_engines` (fixed,
configurable delays, no models): ``pipeline_added`` = endpoint_to_audio minus the
configured ASR + TTFT + TTFB delays is what the gateway, NATS and the hops add per
turn. ``--mode real`` runs the embedded engines. Each level also records errors and
the CPU of every process (from /proc), and whether the client kept its pace.

Writes ``bench/results/load-<mode>-r<replicas>.json`` and ``.png``; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.latency import QUESTIONS, SYSTEM_PROMPT
from bench.loadgen import procstat, profile
from bench.loadgen.client import ClientConfig, ClientResult
from bench.loadgen.report import FixedDelays, plot, summarize_level
from bench.loadgen.script import Cycle, build_cycle
from bench.loadgen.stack import BenchStack, bench_stack
from shared.messages import VadOptions
from shared.settings import CommonSettings
from tests.support.speech import synthesize

CALLS_PER_CLIENT_PROC = 125


def _log(text: str) -> None:
    print(f"[load] {text}", file=sys.stderr, flush=True)


def _parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be integers: {text!r}") from None
    if not levels or any(n < 1 for n in levels):
        raise argparse.ArgumentTypeError(f"levels must be >= 1: {text!r}")
    return levels


def _start_payload(vad_silence_ms: int) -> dict[str, Any]:
    return {
        "format": "pcm",
        "sample_rate": 16000,
        "enable_intermediate_result": True,
        "max_sentence_silence": vad_silence_ms,
        "llm_option": {"main": {"sys_prompt": SYSTEM_PROMPT, "temperature": 0.3}},
        "tts_option": {"sample_rate": 24000},
    }


class Level:
    """One level of concurrency: client processes, CPU sampling, optional profile."""

    def __init__(
        self,
        args: argparse.Namespace,
        stack: BenchStack,
        cycle: Cycle,
        cycle_path: Path,
        work: Path,
    ) -> None:
        self.args = args
        self.stack = stack
        self.cycle = cycle
        self.cycle_path = cycle_path
        self.work = work

    async def run(
        self, calls: int, *, profile_gateway: bool
    ) -> tuple[list[ClientResult], dict[str, float], dict[str, Any] | None]:
        a = self.args
        procs = a.client_procs or max(1, math.ceil(calls / CALLS_PER_CLIENT_PROC))
        procs = min(procs, calls)
        # Client processes import websockets and pydantic before the first call: ~1 s.
        start_at = time.time() + 2.0
        children: list[asyncio.subprocess.Process] = []
        outputs: list[Path] = []
        for p in range(procs):
            config = ClientConfig(
                urls=list(self.stack.gateway_urls),
                api_key=self.stack.api_key,
                call_ids=list(range(p, calls, procs)),
                start_at=start_at,
                ramp_s=a.ramp,
                duration_s=a.duration,
                start_payload=_start_payload(a.vad_silence_ms),
                cycle_path=str(self.cycle_path),
                cycle=self.cycle,
                reply_grace_s=a.reply_grace,
            )
            cfg_path = self.work / f"client-{calls}-{p}.json"
            out_path = self.work / f"result-{calls}-{p}.json"
            cfg_path.write_text(config.model_dump_json())
            outputs.append(out_path)
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.loadgen.client",
                    str(cfg_path),
                    str(out_path),
                    cwd=str(ROOT),
                )
            )
        try:
            return await self._measure(calls, children, outputs, start_at, profile_gateway)
        finally:
            # Interrupted or failed: no client process outlives its level.
            for c in children:
                if c.returncode is None:
                    c.kill()
                    await c.wait()

    async def _measure(
        self,
        calls: int,
        children: list[asyncio.subprocess.Process],
        outputs: list[Path],
        start_at: float,
        profile_gateway: bool,
    ) -> tuple[list[ClientResult], dict[str, float], dict[str, Any] | None]:
        a = self.args
        pids = self.stack.pids()
        pids["clients"] = [c.pid for c in children]
        # CPU over the steady state: every call connected, none stopping yet.
        steady_from = start_at + a.ramp + min(2.0, a.duration / 4)
        steady_to = start_at + a.ramp + a.duration - min(1.0, a.duration / 4)
        await asyncio.sleep(max(0.0, steady_from - time.time()))
        first = procstat.snapshot(pids)
        prof: dict[str, Any] | None = None
        if profile_gateway:
            seconds = max(1, int(steady_to - time.time()))
            raw = self.work / f"gateway-{calls}.txt"
            failure = await profile.record(pids["gateway"][0], seconds, raw)
            prof = (
                {"error": failure}
                if failure
                else {"calls": calls, "seconds": seconds, **profile.summarize(raw)}
            )
        await asyncio.sleep(max(0.0, steady_to - time.time()))
        cpu = procstat.usage(first, procstat.snapshot(pids))
        try:
            async with asyncio.timeout(a.ramp + a.duration + 120):
                codes = [await c.wait() for c in children]
        except TimeoutError:
            raise RuntimeError(f"client processes of level {calls} did not finish") from None
        if any(codes):
            raise RuntimeError(f"a client process of level {calls} failed: exit codes {codes}")
        return [ClientResult.model_validate_json(o.read_text()) for o in outputs], cpu, prof


def _speech(work: Path) -> list[bytes]:
    return [synthesize(q, work) for q in QUESTIONS]


def _fixed_env(a: argparse.Namespace) -> dict[str, str]:
    return {
        "BENCH_FIXED_WINDOW_MS": str(a.frame_ms),
        "BENCH_FIXED_ENERGY_THRESHOLD": str(a.energy_threshold),
        "BENCH_FIXED_ASR_FINAL_MS": str(a.asr_ms),
        "BENCH_FIXED_LLM_TTFT_MS": str(a.ttft_ms),
        "BENCH_FIXED_LLM_TOKENS": str(a.tokens),
        "BENCH_FIXED_LLM_TOKENS_PER_S": str(a.tokens_per_s),
        "BENCH_FIXED_TTS_TTFB_MS": str(a.ttfb_ms),
        "BENCH_FIXED_TTS_MS_PER_CHAR": str(a.tts_ms_per_char),
    }


async def _run(a: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    delays = (
        FixedDelays(
            vad_silence_ms=a.vad_silence_ms,
            asr_final_ms=a.asr_ms,
            llm_ttft_ms=a.ttft_ms,
            tts_ttfb_ms=a.ttfb_ms,
        )
        if a.mode == "fixed"
        else None
    )
    target: dict[str, Any] = (
        {
            "limit_ms": a.target_ms or 50.0,
            "description": f"pipeline added p99 <= {a.target_ms or 50:.0f} ms, no errors",
        }
        if a.mode == "fixed"
        else {
            "limit_ms": a.target_ms or 2000.0,
            "description": f"voice-to-voice p95 <= {a.target_ms or 2000:.0f} ms, no errors",
        }
    )
    limit_ms = float(target["limit_ms"])
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "mode": a.mode,
        "replicas": a.replicas,
        "gateways": a.gateways,
        "machine": {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "config": {
            "frame_ms": a.frame_ms,
            "duration_s": a.duration,
            "ramp_s": a.ramp,
            "gap_s": a.gap,
            "vad_silence_ms": a.vad_silence_ms,
            "fixed_delays": delays.model_dump() if delays else None,
            "fixed_llm": {
                "tokens": a.tokens,
                "tokens_per_s": a.tokens_per_s,
                "tts_ms_per_char": a.tts_ms_per_char,
            }
            if delays
            else None,
        },
        "target": target,
        "levels": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        pcm, cycle = build_cycle(
            _speech(work),
            gap_s=a.gap,
            lead_s=0.3,
            frame_ms=a.frame_ms,
            vad=VadOptions(silence_duration_ms=a.vad_silence_ms),
            threshold=a.energy_threshold,
        )
        cycle_path = work / "cycle.pcm"
        cycle_path.write_bytes(pcm)
        data_dir = CommonSettings().data_dir if a.mode == "real" else work / "data"
        echo = (lambda line: print(line, file=sys.stderr)) if a.verbose else (lambda line: None)
        async with bench_stack(
            mode=a.mode,
            replicas=a.replicas,
            data_dir=data_dir,
            scratch_dir=work / "nats",
            fixed_env=_fixed_env(a),
            echo=echo,
            gateways=a.gateways,
        ) as stack:
            urls = ", ".join(stack.gateway_urls)
            _log(f"stack up ({a.mode}, {a.replicas} replica(s)): {urls}")
            level = Level(a, stack, cycle, cycle_path, work)
            for n in a.levels:
                _log(f"{n} calls for {a.duration:.0f} s ...")
                results, cpu, prof = await level.run(n, profile_gateway=n in a.profile_at)
                summary = summarize_level(
                    n, results, delays=delays, duration_s=a.duration, cpu=cpu, limit_ms=limit_ms
                )
                if prof is not None:
                    summary["gateway_profile"] = prof
                report["levels"].append(summary)
                _log(_line(summary))
                if a.stop_early and _hopeless(summary, limit_ms):
                    _log("far past the target: stopping the ramp")
                    break
    passing = [lv["calls"] for lv in report["levels"] if lv["meets_target"]]
    report["max_calls_meeting_target"] = max(passing, default=0)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


async def _run_until_signalled(a: argparse.Namespace) -> dict[str, Any]:
    """`_run`, cancelled by SIGTERM like Ctrl-C, so the stack's processes are stopped."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    return await _run(a)


def _hopeless(level: dict[str, Any], limit_ms: float) -> bool:
    key = "pipeline_added_ms" if "pipeline_added_ms" in level else None
    value = level[key]["p99"] if key else level["latency_ms"]["voice_to_voice_ms"]["p95"]
    errors = level["error_total"] / max(1, level["turns"] + level["error_total"])
    return bool(errors > 0.2 or not level["turns"] or value > 20 * limit_ms)


def _line(level: dict[str, Any]) -> str:
    v2v = level["latency_ms"]["voice_to_voice_ms"]
    text = (
        f"{level['calls']:>4} calls: {level['turns']} turns, {level['error_total']} errors, "
        f"v2v p50/p95/p99 {v2v['p50']:.0f}/{v2v['p95']:.0f}/{v2v['p99']:.0f} ms"
    )
    if "pipeline_added_ms" in level:
        added = level["pipeline_added_ms"]
        text += f", pipeline added p50/p99 {added['p50']:.0f}/{added['p99']:.0f} ms"
    cpu = level["cpu_pct_of_core"]
    text += (
        f"; cpu gateway {cpu.get('gateway', 0):.0f}% clients {cpu.get('clients', 0):.0f}% "
        f"machine {cpu['machine']:.0f}/{cpu['machine_capacity']:.0f}%"
        f"; pacer late p99 {level['client_pacer_late_ms']['p99']:.1f} ms"
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("fixed", "real"), default="fixed")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        choices=range(1, 9),
        help="replicas of each worker service (one gateway always)",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=1,
        choices=range(1, 9),
        help="gateway replicas (calls spread evenly; CPU reported summed)",
    )
    parser.add_argument(
        "--levels",
        type=_parse_levels,
        default=None,
        help="concurrent calls per level (default fixed: 10,50,100,200,300,500; real: 1,2,4)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each call streams")
    parser.add_argument(
        "--ramp",
        type=float,
        default=None,
        help="seconds over which calls connect (default: 5 ms per call, >= 1)",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=None,
        help="silence after each question, s (default fixed 3, real 7)",
    )
    parser.add_argument("--frame-ms", type=int, default=20, choices=(10, 20, 40, 60, 100))
    parser.add_argument("--vad-silence-ms", type=int, default=500)
    parser.add_argument("--energy-threshold", type=float, default=300.0)
    parser.add_argument("--asr-ms", type=float, default=150.0)
    parser.add_argument("--ttft-ms", type=float, default=250.0)
    parser.add_argument("--tokens", type=int, default=12)
    parser.add_argument("--tokens-per-s", type=float, default=40.0)
    parser.add_argument("--ttfb-ms", type=float, default=150.0)
    parser.add_argument("--tts-ms-per-char", type=float, default=25.0)
    parser.add_argument(
        "--target-ms",
        type=float,
        default=0.0,
        help="override the target (fixed: pipeline p99, real: v2v p95)",
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=0,
        help=f"load-client processes (0: one per {CALLS_PER_CLIENT_PROC} calls)",
    )
    parser.add_argument(
        "--reply-grace",
        type=float,
        default=None,
        help="turns this young at a call's end are not counted unanswered",
    )
    parser.add_argument(
        "--profile-at",
        type=_parse_levels,
        default=[],
        help="levels at which to sample the gateway with py-spy",
    )
    parser.add_argument("--no-stop-early", dest="stop_early", action="store_false")
    parser.add_argument("--verbose", action="store_true", help="relay the services' output")
    parser.add_argument("--out", default="", help="JSON path (the PNG goes beside it)")
    a = parser.parse_args()
    real = a.mode == "real"
    a.levels = a.levels or ([1, 2, 4] if real else [10, 50, 100, 200, 300, 500])
    a.gap = a.gap if a.gap is not None else (7.0 if real else 3.0)
    a.ramp = a.ramp if a.ramp is not None else max(1.0, 0.005 * max(a.levels))
    a.reply_grace = a.reply_grace if a.reply_grace is not None else (10.0 if real else 3.0)
    out = Path(a.out or ROOT / "bench" / "results" / f"load-{a.mode}-r{a.replicas}.json")
    try:
        report = asyncio.run(_run_until_signalled(a))
    except (asyncio.CancelledError, KeyboardInterrupt):
        _log("interrupted; the stack was stopped")
        raise SystemExit(130) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    png = out.with_suffix(".png")
    plot(report, png)
    print(
        f"max calls meeting the target ({report['target']['description']}): "
        f"{report['max_calls_meeting_target']}"
    )
    print(f"written {out} and {png}")


if __name__ == "__main__":
    main()
