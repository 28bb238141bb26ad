"""Recovery time after a replica is killed mid-call, from the client's side.

    ./run bench recovery [--kills 10] [--out bench/results/recovery.json]
    (or: .venv/bin/python bench/recovery.py ...)

Starts a stack with its own NATS and two replicas of each service. For each service type,
``--kills`` calls each lose the replica that serves them to SIGKILL:

* asr: half-way through the user's question (real-time pace, 100 ms frames);
* llm: as the answer's first text delta arrives;
* tts: as the answer's first audio arrives.

Per kill: ``recovery_ms``, from the kill to the first output of the same kind (ASR: any
speech or transcript event; LLM: a text delta or the answer's end; TTS: audio or the
speech's end) received after the gateway logged the move to another replica (output
already in flight when the replica died does not count); ``detect_ms``, from the kill to
that log line (it includes the new placement). Each call must still complete with one
transcript and one answer (``exact``). Before the next kill, the supervisor's restart
of the killed child must be ready, so a second replica is always there to take over.
p50/p95 are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.stack.bella_client import BellaCall, Received
from services.stack.holders import StackLog
from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

ASR_EVENTS = ("VOICE_", "SentenceBegin", "TranscriptionResultChanged", "SentenceEnd")
SYSTEM = "Do what the user asks. Write numbers as English words, separated by commas."


@dataclass
class Kill:
    service: str
    index: int
    detect_ms: float | None
    recovery_ms: float | None
    exact: bool  # one transcript, one answer, text and deltas agree
    note: str = ""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def _is_output(service: str, r: Received) -> bool:
    match service:
        case "asr":
            return r.name.startswith(ASR_EVENTS)
        case "llm":
            return r.name in ("LLM_CHAT_DELTA", "LLM_CHAT_END")
        case _:
            return r.name in ("audio", "TTS_END")


def _exact(call: BellaCall) -> bool:
    names = call.names()
    ends = [r for r in call.received if r.name == "LLM_CHAT_END"]
    deltas = "".join(r.payload["data"] for r in call.received if r.name == "LLM_CHAT_DELTA")
    return (
        names.count("SentenceEnd") == 1
        and len(ends) == 1
        and names.count("TTS_END") == 1
        and deltas == ends[0].payload["data"]
    )


async def _one(
    stack: RunningStack, log: StackLog, service: str, index: int, speech: dict[str, bytes]
) -> Kill:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        payload = {
            "format": "pcm",
            "sample_rate": 16000,
            "enable_intermediate_result": True,
            "llm_option": {"main": {"temperature": 0.0, "max_tokens": 80, "sys_prompt": SYSTEM}},
            "tts_option": {"sample_rate": 16000},
        }
        started = await call.start(payload)
        if started.name != "TranscriptionStarted":
            return Kill(service, index, None, None, False, f"start: {started.payload}")
        pcm = speech["count"]
        rest = b""
        if service == "asr":
            half = len(pcm) // 2 // 3200 * 3200
            await call.send_audio(pcm[:half])
            rest = pcm[half:] + silence(1.5)
        else:
            await call.send_audio(pcm + silence(1.5), realtime=False)
            first = "LLM_CHAT_DELTA" if service == "llm" else "audio"
            await call.wait_for(lambda r: r.name == first, timeout_s=60)
        holder = await log.holder(service)
        pid = stack.supervisor.pid_of(holder.child)
        assert pid is not None
        mark = len(log.lines)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        sender = asyncio.create_task(call.send_audio(rest)) if rest else None
        moved = await log.wait_line(
            lambda line: f"{service} of call" in line and f"moved from {holder.replica}" in line,
            after=mark,
            timeout_s=20,
        )
        moved_at = log.times[moved]
        late = [i for i, r in enumerate(call.received) if r.at >= moved_at]
        after = late[0] if late else len(call.received)
        output = await call.wait_for(lambda r: _is_output(service, r), after=after, timeout_s=60)
        if sender is not None:
            await sender
        await call.wait_for(lambda r: r.name == "TTS_END", timeout_s=120)
        await call.wait_for(lambda r: r.name == "LLM_CHAT_END", timeout_s=30)
        exact = _exact(call)
        await call.stop(timeout_s=60)
        # The killed child comes back as a new replica before the next kill.
        await log.wait_line(
            lambda line: line.startswith(f"[{holder.child}] ") and " READY " in line,
            after=mark,
            timeout_s=120,
        )
        return Kill(
            service,
            index,
            round((moved_at - killed_at) * 1000, 1),
            round((output.at - killed_at) * 1000, 1),
            exact,
        )
    except (TimeoutError, LookupError, ConnectionError) as exc:
        return Kill(service, index, None, None, False, f"{type(exc).__name__}: {exc}")
    finally:
        await call.aclose()


def _summary(kills: list[Kill]) -> dict[str, object]:
    out: dict[str, object] = {}
    for service in ("asr", "llm", "tts"):
        mine = [k for k in kills if k.service == service]
        rec = [k.recovery_ms for k in mine if k.recovery_ms is not None]
        det = [k.detect_ms for k in mine if k.detect_ms is not None]
        out[service] = {
            "kills": len(mine),
            "recovered": len(rec),
            "exact": sum(1 for k in mine if k.exact),
            "recovery_p50_ms": _pct(rec, 50),
            "recovery_p95_ms": _pct(rec, 95),
            "detect_p50_ms": _pct(det, 50),
            "detect_p95_ms": _pct(det, 95),
        }
    return out


async def _main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="recovery-") as d:
        speech = {"count": synthesize("Please count from one to twenty.", Path(d))}
    log = StackLog(print_lines=args.verbose)
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_port=free_port(),
        gateway_port=free_port(),
        api_keys=("bench-recovery",),
        replicas={"asr": 2, "llm": 2, "tts": 2},
    )
    kills: list[Kill] = []
    async with running_stack(options, echo=log) as stack:
        for service in args.services.split(","):
            for i in range(args.kills):
                kill = await _one(stack, log, service, i, speech)
                print(json.dumps(asdict(kill)), flush=True)
                kills.append(kill)
    return {
        "settings": {"kills_per_service": args.kills, "replicas": options.replicas},
        "summary": _summary(kills),
        "kills": [asdict(k) for k in kills],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=10, help="kills per service type")
    parser.add_argument("--services", default="asr,llm,tts")
    parser.add_argument("--verbose", action="store_true", help="echo the stack's output")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "recovery.json"))
    args = parser.parse_args()
    report = asyncio.run(_main(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
