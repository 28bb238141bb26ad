"""The JetStream session store against a real nats-server (>= 2.11: per-key TTL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.kv import KV_PURGE

from shared.errors import BusError, StateConflictError
from shared.messages import ChatMessage, HistoryOp, LlmEdit
from shared.state import (
    HistoryLimits,
    SessionConfig,
    SessionRecord,
    SessionStore,
    StateOptions,
)
from tests.support.natsserver import LocalNats

StoreFactory = Callable[..., Awaitable[SessionStore]]


def record(sid: str, owner: str | None = "gw-a", key_id: str = "k-one") -> SessionRecord:
    return SessionRecord(
        sid=sid,
        key_id=key_id,
        protocol="bella",
        owner=owner,
        config=SessionConfig(persona="qingqing", voice="v1", variables={"name": "Ada"}),
    )


def msg(item_id: str, content: str, role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content=content, item_id=item_id)  # type: ignore[arg-type]


@pytest.fixture
async def stores(nats_server: object) -> AsyncIterator[StoreFactory]:
    """Stores on their own connections (as on separate gateway replicas), sharing buckets
    unique to the test; everything is closed and the buckets deleted afterwards."""
    url: str = nats_server.url  # type: ignore[attr-defined]
    tag = uuid.uuid4().hex[:8]
    conns: list[NatsClient] = []

    async def make(**overrides: Any) -> SessionStore:
        nc = await nats.connect(url)
        conns.append(nc)
        options = StateOptions(
            sessions_bucket=f"sessions_{tag}", history_bucket=f"history_{tag}", **overrides
        )
        return await SessionStore.open(nc, options)

    try:
        yield make
    finally:
        if conns:
            js = conns[0].jetstream()
            for bucket in (f"sessions_{tag}", f"history_{tag}"):
                await js.delete_key_value(bucket)
        for nc in conns:
            await nc.close()


async def test_records_are_written_by_compare_and_set(stores: StoreFactory) -> None:
    store = await stores()
    created = await store.create(record("s1"))
    assert created.revision > 0 and created.value.created_at > 0
    with pytest.raises(StateConflictError):
        await store.create(record("s1", owner="gw-b"))  # the id is taken

    got = await store.get("s1")
    assert got is not None and got == created
    turn1 = await store.update(got.value.model_copy(update={"turn": 1}), last=got.revision)
    assert turn1.revision > got.revision
    with pytest.raises(StateConflictError):  # a writer holding the old revision loses
        await store.update(got.value.model_copy(update={"turn": 9}), last=got.revision)
    latest = await store.get("s1")
    assert latest is not None and latest.value.turn == 1

    bumped = await store.modify("s1", lambda r: r.model_copy(update={"turn": r.turn + 1}))
    assert bumped is not None and bumped.value.turn == 2
    assert await store.get("nobody") is None
    assert await store.modify("nobody", lambda r: r) is None
    with pytest.raises(ValueError):
        await store.get("a.b")  # not a key: would address other keys


async def test_history_round_trips_with_edits_and_bounds(stores: StoreFactory) -> None:
    store = await stores(history=HistoryLimits(max_items=4))
    assert (await store.history("h1")).value.items == ()
    await store.append("h1", msg("u1", "What is the weather?"))
    await store.append("h1", msg("a1", "It is sunny and warm today.", "assistant"))
    await store.apply(LlmEdit(sid="h1", op=HistoryOp.APPEND, message=msg("u2", "And tomorrow?")))
    # Barge-in: the user heard only the start of the answer.
    cut = await store.truncate("h1", "a1", "It is sunny")
    assert cut is not None
    assert await store.truncate("h1", "missing", "x") is None
    assert await store.delete_item("h1", "missing") is None
    await store.apply(LlmEdit(sid="h1", op=HistoryOp.DELETE, item_id="u2"))

    history = (await store.history("h1")).value
    assert [(m.item_id, m.content) for m in history.items] == [
        ("u1", "What is the weather?"),
        ("a1", "It is sunny"),
    ]
    for i in range(5):
        await store.append("h1", msg(f"x{i}", "more"))
    bounded = (await store.history("h1")).value
    assert [m.item_id for m in bounded.items] == ["x1", "x2", "x3", "x4"]
    assert bounded.dropped == 3


async def test_replicas_with_other_settings_share_the_buckets(stores: StoreFactory) -> None:
    """A rolling update may run two configurations at once: the buckets are reused."""
    old = await stores()
    new = await stores(history=HistoryLimits(max_bytes=4096), marker_ttl_s=5)
    await old.create(record("b1"))
    got = await new.get("b1")
    assert got is not None and got.value.sid == "b1"


async def test_concurrent_writers_lose_nothing(stores: StoreFactory) -> None:
    """Two replicas appending at once: compare-and-set retries keep every item."""
    a, b = await stores(cas_attempts=30), await stores(cas_attempts=30)
    await asyncio.gather(
        *((a if i % 2 else b).append("c1", msg(f"m{i}", f"message {i}")) for i in range(12))
    )
    items = (await a.history("c1")).value.items
    assert sorted(m.item_id for m in items) == sorted(f"m{i}" for i in range(12))


async def ttls(store: SessionStore, sid: str) -> tuple[str, str]:
    """The per-key TTL headers the server holds for a session's record and history."""
    found = []
    for bucket in (store.options.sessions_bucket, store.options.history_bucket):
        msg = await store_js(store).get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{sid}")
        found.append((msg.headers or {}).get("Nats-TTL", ""))
    return found[0], found[1]


def store_js(store: SessionStore) -> Any:
    return store._sessions._js  # the test inspects what was written


async def test_resume_on_another_replica(stores: StoreFactory) -> None:
    gw_a, gw_b = await stores(grace_s=60, live_ttl_s=300), await stores()
    await gw_a.create(record("r1", owner="gw-a"))
    await gw_a.append("r1", msg("u1", "Remember: my name is Ada."))
    assert await ttls(gw_a, "r1") == ("300", "300")  # owned: the live TTL
    assert await gw_a.detach("r1", owner="gw-a")  # connection lost
    assert await ttls(gw_a, "r1") == ("60", "60")  # both expire after the grace period

    assert await gw_b.claim("r1", owner="gw-b", key_id="k-other") is None  # another key
    resumed = await gw_b.claim("r1", owner="gw-b", key_id="k-one")
    assert resumed is not None
    assert resumed.value.owner == "gw-b" and resumed.value.detached_at is None
    assert resumed.value.config.variables == {"name": "Ada"}
    assert await ttls(gw_b, "r1") == ("300", "300")
    history = (await gw_b.history("r1")).value
    assert [m.content for m in history.items] == ["Remember: my name is Ada."]

    # The previous owner finds out it lost the call; it cannot detach or renew it.
    assert not await gw_a.detach("r1", owner="gw-a")
    assert await gw_a.touch("r1", owner="gw-a") is None
    assert await gw_b.touch("r1", owner="gw-b") is not None
    assert await gw_b.claim("absent", owner="gw-b", key_id="k-one") is None

    await gw_b.delete("r1")
    assert await gw_b.get("r1") is None
    assert (await gw_b.history("r1")).value.items == ()
    assert (await gw_b.create(record("r1", owner="gw-b"))).value.owner == "gw-b"  # reusable


async def test_detached_session_expires_after_the_grace_period(
    stores: StoreFactory, nats_server: object
) -> None:
    store = await stores(grace_s=1, marker_ttl_s=60)
    await store.create(record("g1"))
    await store.append("g1", msg("u1", "hello"))

    nc = await nats.connect(nats_server.url)  # type: ignore[attr-defined]
    try:
        js = nc.jetstream()
        watchers = [
            await (await js.key_value(bucket)).watch("g1")
            for bucket in (store.options.sessions_bucket, store.options.history_bucket)
        ]
        assert await store.detach("g1", owner="gw-a")
        # The server places a marker when the key's TTL runs out: wait for that event.
        async with asyncio.timeout(15):
            for watcher in watchers:
                while True:
                    entry = await watcher.updates(timeout=15)  # type: ignore[no-untyped-call]
                    if entry is not None and entry.operation == KV_PURGE:
                        break
        for watcher in watchers:
            await watcher.stop()  # type: ignore[no-untyped-call]
    finally:
        await nc.close()

    assert await store.get("g1") is None  # the marker reads as absent, not as a value
    assert (await store.history("g1")).value.items == ()
    assert await store.claim("g1", owner="gw-b", key_id="k-one") is None
    again = await store.create(record("g1"))  # the id can be used again
    assert again.value.turn == 0


async def test_state_survives_a_nats_restart(private_nats: LocalNats) -> None:
    """Written, NATS killed and restarted on its store, read back on the same connection."""
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await nats.connect(
        private_nats.url,
        reconnected_cb=on_reconnect,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
    )
    try:
        store = await SessionStore.open(nc)
        created = await store.create(record("p1"))
        await store.append("p1", msg("u1", "before the restart"))

        private_nats.restart()  # SIGKILL, then the same port and store directory
        async with asyncio.timeout(20):
            await reconnected.wait()

        got = await store.get("p1")
        assert got is not None and got.revision == created.revision
        assert got.value.config.persona == "qingqing"
        history = (await store.history("p1")).value
        assert [m.content for m in history.items] == ["before the restart"]
        # Revisions carry over, so compare-and-set continues where it left off.
        updated = await store.update(got.value.model_copy(update={"turn": 1}), last=got.revision)
        assert updated.revision > got.revision
        await store.append("p1", msg("a1", "after the restart", "assistant"))
        assert len((await store.history("p1")).value.items) == 2
    finally:
        await nc.close()


async def test_an_unavailable_nats_is_a_bus_error(private_nats: LocalNats) -> None:
    """A hung server (SIGSTOP) or a closed connection: a clear error within the timeout."""
    nc = await nats.connect(private_nats.url)
    try:
        store = await SessionStore.open(nc, StateOptions(timeout_s=0.5))
        await store.create(record("u1"))
        private_nats.pause()  # returns once the kernel reports the server stopped
        try:
            with pytest.raises(BusError):
                await store.get("u1")
            with pytest.raises(BusError):
                await store.append("u1", msg("m1", "lost"))
        finally:
            private_nats.resume()
        got = await store.get("u1")
        assert got is not None and got.value.sid == "u1"
    finally:
        await nc.close()
    with pytest.raises(BusError):
        await store.get("u1")
