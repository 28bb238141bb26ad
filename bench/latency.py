"""Per-turn latency of real calls through the gateway, from the client's side.

    ./run bench latency [--turns 20] [--concurrency 1,4] [--out bench/results/latency.json]

Starts the whole stack (its own NATS, embedded engines) unless ``--url`` points at a
running gateway, then places calls with speech made by espeak-ng, streamed at real-time
pace in 100 ms frames, and reports per turn:

* eos_to_final: last voiced frame sent -> SentenceEnd received
* llm_ttft: SentenceEnd received -> first LLM_CHAT_DELTA received
* tts_first_audio: first LLM_CHAT_DELTA -> first reply audio byte received
* voice_to_voice: last voiced frame sent -> first reply audio byte received

p50/p95 for 1 call and for N concurrent calls, plus the resident memory of every process
of the stack. Figures are printed and written as JSON; nothing is asserted.

The ``chain`` case (``--cases chain``) measures what one blocking worker adds: one call
answers ``--chain-turns`` turns plainly, another the same turns with a blocking rewrite
worker (the Bella documentation's ``rewrite_user_message``) in front of the main model;
llm_ttft then includes the worker's whole generation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
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
    "What color is the sky on a clear day?",
    "Can you recommend a good book?",
    "What is two plus two?",
    "Tell me something about the moon.",
    "What is the weather usually like in summer?",
    "Which animal is the largest on earth?",
]

SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer briefly "
    "in one or two short sentences and finish the first sentence quickly."
)


@dataclass
class Turn:
    call: int
    turn: int
    question: str
    transcript: str
    eos_to_final_ms: float
    llm_ttft_ms: float
    tts_first_audio_ms: float
    voice_to_voice_ms: float
    server_ttft_ms: float
    worker_result: str = ""  # the chain case: what the blocking worker produced


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


REWRITE_WORKER = {
    "blocking": True,
    "variable_name": "rewrite_user_message",
    "temperature": 0.0,
    "max_tokens": 48,
    "sys_prompt": "Rewrite the user's transcribed message so it is fluent and clear. "
    "Do not explain; output only the rewritten message, or the original if it is fine.",
    "prompt": "## History\n{% for message in history_messages %}"
    "<{{ message.role }}>{{ message.content }}</{{ message.role }}>\n{% endfor %}"
    "## Latest user message\n{{ user_message }}",
}
PLAIN_LLM: dict[str, object] = {"main": {"sys_prompt": SYSTEM_PROMPT, "temperature": 0.3}}
CHAIN_LLM: dict[str, object] = {**PLAIN_LLM, "workers": [REWRITE_WORKER]}


async def _one_call(
    url: str,
    key: str,
    call_no: int,
    turns: int,
    speech: list[tuple[str, bytes]],
    llm_option: dict[str, object] = PLAIN_LLM,
) -> list[Turn]:
    call = await BellaCall.open(f"{url}/v1/audio/realtime", key)
    results: list[Turn] = []
    try:
        started = await call.start(
            {
                "format": "pcm",
                "sample_rate": 16000,
                "enable_intermediate_result": True,
                "llm_option": llm_option,
                "tts_option": {"sample_rate": 24000},
            }
        )
        if started.name != "TranscriptionStarted":
            raise RuntimeError(f"call refused: {started.header}")
        for t in range(turns):
            text, pcm = speech[(call_no + t) % len(speech)]
            mark = len(call.received)
            speech_end = await call.send_audio(pcm)
            silence_task = asyncio.create_task(call.send_audio(silence(1.2)))
            end = await call.wait_for(lambda r: r.name == "SentenceEnd", after=mark, timeout_s=180)
            delta = await call.wait_for(
                lambda r: r.name == "LLM_CHAT_DELTA", after=mark, timeout_s=180
            )
            audio = await call.wait_for(lambda r: r.name == "audio", after=mark, timeout_s=180)
            ttft = await call.wait_for(lambda r: r.name == "TTS_TTFT", after=mark, timeout_s=180)
            await call.wait_for(lambda r: r.name == "TTS_END", after=mark, timeout_s=300)
            await silence_task
            results.append(
                Turn(
                    call=call_no,
                    turn=t,
                    question=text,
                    transcript=end.payload.get("result", ""),
                    eos_to_final_ms=(end.at - speech_end) * 1000,
                    llm_ttft_ms=(delta.at - end.at) * 1000,
                    tts_first_audio_ms=(audio.at - delta.at) * 1000,
                    voice_to_voice_ms=(audio.at - speech_end) * 1000,
                    server_ttft_ms=float(ttft.payload.get("latency", -1)),
                    worker_result=next(
                        (
                            str(r.payload.get("data"))
                            for r in call.received[mark:]
                            if r.name == "LLM_WORKER_END"
                        ),
                        "",
                    ),
                )
            )
            print(
                f"  call {call_no} turn {t}: v2v {results[-1].voice_to_voice_ms:6.0f} ms  "
                f"'{results[-1].transcript}'",
                file=sys.stderr,
            )
        await call.stop()
    finally:
        await call.aclose()
    return results


def _summary(turns: list[Turn]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for field in (
        "eos_to_final_ms",
        "llm_ttft_ms",
        "tts_first_audio_ms",
        "voice_to_voice_ms",
        "server_ttft_ms",
    ):
        values = [getattr(t, field) for t in turns]
        out[field] = {
            "p50": _pct(values, 50),
            "p95": _pct(values, 95),
            "mean": statistics.fmean(values) if values else float("nan"),
            "n": len(values),
        }
    return out


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _stack_memory(stack: RunningStack | None) -> dict[str, float]:
    if stack is None:
        return {}
    names = ["nats", "asr-1", "llm-1", "tts-1", "gateway"]
    mem = {}
    for name in names:
        pid = stack.supervisor.pid_of(name)
        if pid:
            mem[name] = round(_rss_mib(pid) + _children_rss(pid), 1)
    mem["total"] = round(sum(mem.values()), 1)
    return mem


def _children_rss(pid: int) -> float:
    # TTS runs piper as its own program: count its children too.
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    for child in children:
        total += _rss_mib(int(child)) + _children_rss(int(child))
    return total


async def _chain_case(
    url: str, key: str, turns: int, speech: list[tuple[str, bytes]]
) -> dict[str, object]:
    """The same turns without and with one blocking worker, one call at a time."""
    print(
        f"[bench] worker chain: {turns} turns plain, {turns} with one blocking worker",
        file=sys.stderr,
    )
    plain = await _one_call(url, key, 0, turns, speech, PLAIN_LLM)
    chained = await _one_call(url, key, 0, turns, speech, CHAIN_LLM)
    out: dict[str, object] = {"plain": _summary(plain), "one_blocking_worker": _summary(chained)}
    added = {}
    for field in ("llm_ttft_ms", "voice_to_voice_ms"):
        added[field] = {
            q: _pct([getattr(t, field) for t in chained], n)
            - _pct([getattr(t, field) for t in plain], n)
            for q, n in (("p50", 50), ("p95", 95))
        }
    out["added_ms"] = added
    out["worker_results"] = [t.worker_result for t in chained]
    return out


async def _run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        speech = [(q, synthesize(q, Path(d))) for q in QUESTIONS]
    report: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "turns_per_level": args.turns,
    }

    async def measure(url: str, key: str, stack: RunningStack | None) -> None:
        # One warm-up turn so that model first-use costs are not counted.
        await _one_call(url, key, 99, 1, speech)
        if "chain" in args.cases:
            report["chain"] = await _chain_case(url, key, args.chain_turns, speech)
        if "levels" not in args.cases:
            return
        levels: dict[str, object] = {}
        for n in [int(x) for x in args.concurrency.split(",")]:
            per_call = max(1, args.turns // n)
            print(f"[bench] {n} concurrent call(s), {per_call} turns each", file=sys.stderr)
            results = await asyncio.gather(
                *(_one_call(url, key, c, per_call, speech) for c in range(n))
            )
            turns = [t for r in results for t in r]
            levels[str(n)] = {"summary": _summary(turns), "turns": [asdict(t) for t in turns]}
        report["levels"] = levels
        report["memory_mib"] = _stack_memory(stack)

    if args.url:
        await measure(args.url, args.api_key, None)
    else:
        options = StackOptions(
            data_dir=CommonSettings().data_dir,
            gateway_port=free_port(),
            nats_port=free_port(),
            api_keys=("bench-key",),
        )
        async with running_stack(options, echo=lambda line: None) as stack:
            await measure(stack.gateway_url, stack.api_key, stack)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument(
        "--cases",
        default="levels,chain",
        help="comma-separated: levels (concurrency), chain (worker chain)",
    )
    parser.add_argument("--chain-turns", type=int, default=6)
    parser.add_argument("--url", default="", help="a running gateway, e.g. ws://127.0.0.1:8080")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latency.json"))
    args = parser.parse_args()
    report = asyncio.run(_run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{'calls':>5} {'stage':<20} {'p50 ms':>8} {'p95 ms':>8}")
    for level, data in report.get("levels", {}).items():  # type: ignore[attr-defined]
        for stage, s in data["summary"].items():
            print(f"{level:>5} {stage:<20} {s['p50']:8.0f} {s['p95']:8.0f}")
    if "chain" in report:
        for case in ("plain", "one_blocking_worker"):
            for stage, s in report["chain"][case].items():  # type: ignore[index]
                print(f"{case:>20} {stage:<20} {s['p50']:8.0f} {s['p95']:8.0f}")
        print(f"added by one blocking worker (ms): {report['chain']['added_ms']}")  # type: ignore[index]
    print(f"memory (MiB): {report.get('memory_mib', {})}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
