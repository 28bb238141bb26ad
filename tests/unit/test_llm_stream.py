"""The thread -> loop hand-off: order, bounded buffer, stop."""

from __future__ import annotations

import asyncio
import threading

from services.llm.chunks import Finished, TextPiece
from services.llm.stream import StreamClosed, TokenStream


async def test_events_from_another_thread_arrive_in_order() -> None:
    stream = TokenStream(asyncio.get_running_loop())

    def produce() -> None:
        for i in range(50):
            assert stream.offer([TextPiece(str(i))])
        stream.close()

    thread = threading.Thread(target=produce)
    thread.start()
    texts = []
    async with asyncio.timeout(5):
        while not isinstance(event := await stream.next(), StreamClosed):
            assert isinstance(event, TextPiece)
            texts.append(event.text)
    thread.join()
    assert texts == [str(i) for i in range(50)]


async def test_a_full_buffer_merges_text_without_losing_any() -> None:
    merged = []
    stream = TokenStream(
        asyncio.get_running_loop(), maxsize=2, on_coalesce=lambda: merged.append(1)
    )
    stream.offer([TextPiece("a"), TextPiece("b"), TextPiece("c"), TextPiece("d")])
    stream.offer([Finished(reason="stop")])
    stream.close()
    events = []
    async with asyncio.timeout(5):
        while not isinstance(event := await stream.next(), StreamClosed):
            events.append(event)
    assert events == [TextPiece("a"), TextPiece("bcd"), Finished(reason="stop")]
    assert len(merged) == 2


async def test_stop_tells_the_producer_to_stop() -> None:
    stream = TokenStream(asyncio.get_running_loop())
    assert stream.offer([TextPiece("x")])
    stream.stop()
    assert stream.stop_requested
    assert not stream.offer([TextPiece("y")])


def test_a_closed_loop_stops_the_producer() -> None:
    loop = asyncio.new_event_loop()
    stream = TokenStream(loop)
    loop.close()
    assert not stream.offer([TextPiece("late")])
    stream.close()  # must not raise either
