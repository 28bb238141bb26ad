"""Soak: N calls for a long time, and the memory of every process at start and end.

    ./run bench soak [--calls 2] [--minutes 30] [--out bench/results/soak.json]

Starts the whole stack (its own NATS, embedded engines) and keeps ``--calls`` calls
talking through the Bella endpoint: each call asks a spoken question, waits for the whole
answer, and asks again, hanging up and calling anew every ``--turns-per-call`` turns so
that call setup and teardown are soaked too. Resident memory (with child processes, e.g.
piper under TTS) of every process is sampled after a warm-up and at the end, and every
minute in between. Choose ``--calls`` so the engines keep up (on 2 cores: 2).
Figures are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.stack.bella_client import BellaCall
from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "Tell me something about the moon.",
    "What is two plus two?",
]
START = {
    "format": "pcm",
    "sample_rate": 16000,
    "enable_intermediate_result": True,
    "llm_option": {
        "main": {
            "sys_prompt": "You are a voice assistant. Answer in one short sentence.",
            "temperature": 0.3,
        }
    },
    "tts_option": {"sample_rate": 24000},
}


@dataclass
class Tally:
    turns: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(rss_mib(int(c)) for c in children)


def memory(stack: RunningStack) -> dict[str, float]:
    out = {}
    for name in stack.supervisor.names():
        pid = stack.supervisor.pid_of(name)
        if pid:
            out[name] = round(rss_mib(pid), 1)
    return out


async def talk(
    url: str, key: str, n: int, deadline: float, per_call: int, speech: list[bytes], tally: Tally
) -> None:
    turn_no = n
    while time.monotonic() < deadline:
        call = await BellaCall.open(f"{url}/v1/audio/realtime", key)
        try:
            started = await call.start(START)
            if started.name != "TranscriptionStarted":
                tally.errors.append(f"start refused: {started.header}")
                return
            tally.calls += 1
            for _ in range(per_call):
                if time.monotonic() >= deadline:
                    break
                mark = len(call.received)
                await call.send_audio(speech[turn_no % len(speech)])
                turn_no += 1
                pad = asyncio.create_task(call.send_audio(silence(1.2)))
                try:
                    await call.wait_for(lambda r: r.name == "TTS_END", after=mark, timeout_s=120)
                finally:
                    await pad
                failed = [
                    r for r in call.received[mark:] if r.name in ("TaskFailed", "LLM_CHAT_ERROR")
                ]
                if failed:
                    tally.errors.append(f"{failed[0].name}: {failed[0].header}")
                tally.turns += 1
            await call.stop()
        except Exception as exc:  # noqa: BLE001 - a soak records failures and goes on
            tally.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            await call.aclose()


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        speech = [synthesize(q, Path(d)) for q in QUESTIONS]
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        gateway_port=free_port(),
        nats_port=free_port(),
        api_keys=("soak-key",),
    )
    async with running_stack(options, echo=lambda line: None) as stack:
        url, key = stack.gateway_url, stack.api_key
        warm = Tally()
        await talk(url, key, 0, time.monotonic() + 1, 1, speech, warm)  # first-use costs
        start_mem = memory(stack)
        print(f"[soak] start memory (MiB): {start_mem}", file=sys.stderr)
        samples = [{"t_s": 0.0, "mib": start_mem}]
        began = time.monotonic()
        deadline = began + args.minutes * 60
        tally = Tally()
        calls = [
            asyncio.create_task(talk(url, key, n, deadline, args.turns_per_call, speech, tally))
            for n in range(args.calls)
        ]
        while not all(c.done() for c in calls):
            await asyncio.wait(calls, timeout=60)
            samples.append({"t_s": round(time.monotonic() - began), "mib": memory(stack)})
            print(
                f"[soak] {samples[-1]['t_s']} s: {tally.turns} turns, "
                f"{len(tally.errors)} errors, {samples[-1]['mib']}",
                file=sys.stderr,
            )
        end_mem = memory(stack)
    growth = {
        name: round(100 * (end_mem[name] - start_mem[name]) / start_mem[name], 1)
        for name in start_mem
        if name in end_mem and start_mem[name] > 0
    }
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "calls": args.calls,
        "minutes": args.minutes,
        "turns": tally.turns,
        "calls_placed": tally.calls,
        "errors": tally.errors[:50],
        "error_count": len(tally.errors),
        "memory_start_mib": start_mem,
        "memory_end_mib": end_mem,
        "growth_percent": growth,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--turns-per-call", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(
        f"turns {report['turns']}, calls {report['calls_placed']}, errors {report['error_count']}"
    )
    print(f"memory growth (%): {report['growth_percent']}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
