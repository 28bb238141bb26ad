"""The gateway tells a dead replica from a hung one, on a real NATS, with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from services.gateway.liveness import (
    LagMeter,
    ProbeOptions,
    ProbeOutcome,
    ProbeTracker,
    ReplicaMonitor,
    ReplicaWatch,
    Verdict,
)
from shared.messages import ServiceName

# A process that is nothing but a nats.micro service named like our ASR replicas.
REPLICA = """
import asyncio, sys
import nats
from nats.micro import add_service
from nats.micro.service import ServiceConfig

async def main():
    nc = await nats.connect(sys.argv[1])
    svc = await add_service(nc, ServiceConfig(name="asr", version="0.1.0"))
    print(svc.id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, replica_id: str) -> None:
        self.proc = proc
        self.id = replica_id

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)


@pytest.fixture
async def replica(nats_server: Any) -> AsyncIterator[Replica]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", REPLICA, nats_server.url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        yield Replica(proc, line.decode().strip())
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        await proc.wait()


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


def test_tracker_needs_consecutive_misses_for_hung() -> None:
    tracker = ProbeTracker(misses_to_hung=2)
    assert tracker.feed(ProbeOutcome.TIMEOUT) is Verdict.ALIVE
    assert tracker.feed(ProbeOutcome.REPLY) is Verdict.ALIVE  # a reply resets the count
    assert tracker.feed(ProbeOutcome.TIMEOUT) is Verdict.ALIVE
    assert tracker.feed(ProbeOutcome.DISCONNECTED) is Verdict.ALIVE  # no information
    assert tracker.feed(ProbeOutcome.TIMEOUT) is Verdict.HUNG
    assert ProbeTracker().feed(ProbeOutcome.NO_RESPONDERS) is Verdict.DEAD


async def _watch_until_lost(
    nc: Client, replica: Replica
) -> tuple[asyncio.Task[Verdict], list[Verdict]]:
    lost: list[Verdict] = []

    async def on_lost(service: ServiceName, replica_id: str, verdict: Verdict) -> None:
        assert (service, replica_id) == (ServiceName.ASR, replica.id)
        lost.append(verdict)

    watch = ReplicaWatch(
        nc, ServiceName.ASR, replica.id, on_lost, ProbeOptions(interval_s=0.05, timeout_s=0.2)
    )
    assert await watch.probe() is ProbeOutcome.REPLY  # alive before anything happens
    task = asyncio.create_task(watch.run())
    return task, lost


async def test_a_killed_replica_is_dead(nc: Client, replica: Replica) -> None:
    task, lost = await _watch_until_lost(nc, replica)
    replica.signal(signal.SIGKILL)
    verdict = await asyncio.wait_for(task, 10)
    assert verdict is Verdict.DEAD
    assert lost == [Verdict.DEAD]


async def test_a_stopped_replica_is_hung_not_dead(nc: Client, replica: Replica) -> None:
    task, lost = await _watch_until_lost(nc, replica)
    replica.signal(signal.SIGSTOP)
    verdict = await asyncio.wait_for(task, 10)
    assert verdict is Verdict.HUNG
    assert lost == [Verdict.HUNG]


async def test_a_healthy_replica_keeps_answering(nc: Client, replica: Replica) -> None:
    watch = ReplicaWatch(nc, ServiceName.ASR, replica.id, _never_lost)
    outcomes = [await watch.probe() for _ in range(5)]
    assert outcomes == [ProbeOutcome.REPLY] * 5


async def _never_lost(service: ServiceName, replica_id: str, verdict: Verdict) -> None:
    raise AssertionError(f"{service} {replica_id} reported {verdict}")


async def test_monitor_probes_each_replica_once_for_all_calls(nc: Client, replica: Replica) -> None:
    monitor = ReplicaMonitor(nc, ProbeOptions(interval_s=0.05, timeout_s=0.2))
    try:
        calls = [asyncio.create_task(monitor.watch(ServiceName.ASR, replica.id)) for _ in range(50)]
        leaving = asyncio.create_task(monitor.watch(ServiceName.ASR, replica.id))
        await asyncio.sleep(0)  # let every watcher register (not waiting for a condition)
        assert monitor.probing == 1
        leaving.cancel()  # a call that ended: the others keep the probe
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert monitor.probing == 1
        replica.signal(signal.SIGKILL)
        verdicts = await asyncio.wait_for(asyncio.gather(*calls), 10)
        assert verdicts == [Verdict.DEAD] * 50
        assert monitor.probing == 0  # the verdict ended the probe
    finally:
        await monitor.aclose()


async def test_monitor_stops_probing_when_the_last_call_leaves(
    nc: Client, replica: Replica
) -> None:
    monitor = ReplicaMonitor(nc)
    try:
        watchers = [
            asyncio.create_task(monitor.watch(ServiceName.ASR, replica.id)) for _ in range(3)
        ]
        await asyncio.sleep(0)
        assert monitor.probing == 1
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        assert monitor.probing == 0
    finally:
        await monitor.aclose()
    with pytest.raises(RuntimeError):
        await monitor.watch(ServiceName.ASR, replica.id)


def test_a_probe_our_own_loop_noticed_late_is_not_a_miss() -> None:
    tracker = ProbeTracker(misses_to_hung=2)
    assert tracker.feed(ProbeOutcome.TIMEOUT) is Verdict.ALIVE
    assert tracker.feed(ProbeOutcome.LATE) is Verdict.ALIVE  # neither a miss...
    assert tracker.misses == 1  # ...nor a reply
    assert tracker.feed(ProbeOutcome.TIMEOUT) is Verdict.HUNG


async def test_an_overloaded_gateway_does_not_call_a_silent_replica_hung(
    nc: Client, replica: Replica
) -> None:
    lag = LagMeter(step_s=0.01)
    meter = asyncio.create_task(lag.run(0.025))
    try:
        options = ProbeOptions(timeout_s=0.1)
        watch = ReplicaWatch(nc, ServiceName.ASR, replica.id, _never_lost, options, lag)
        replica.signal(signal.SIGSTOP)  # it will not answer
        assert await watch.probe() is ProbeOutcome.TIMEOUT  # our loop was on time

        async def overload() -> None:
            # Our own loop stuck in work for 0.3 s, as under a flood of frames.
            time.sleep(0.3)  # noqa: ASYNC251 - the blocking is the point (noqa: sleep-ok)

        busy = asyncio.create_task(overload())
        assert await watch.probe() is ProbeOutcome.LATE
        await busy
    finally:
        meter.cancel()


async def test_another_replica_counts_only_other_replicas_that_answer(
    nc: Client, replica: Replica
) -> None:
    monitor = ReplicaMonitor(nc)
    try:
        assert await monitor.another_replica(ServiceName.ASR, "some-other-replica") is True
        assert await monitor.another_replica(ServiceName.ASR, replica.id) is False
    finally:
        await monitor.aclose()
