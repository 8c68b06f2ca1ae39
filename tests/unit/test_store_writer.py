"""StoreWriter's group commit: which messages share a transaction, and that nobody waits long.

The gathering windows here are long (tenths of a second to minutes) and the senders' pauses
short, so each case holds on a loaded machine; the ``wait_for`` guards only stop a test that
would otherwise hang if the writer waited when it must not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from adt_listener.store import ACCEPTED, IncomingMessage, StoreResult
from adt_listener.writer import StoreWriter
from tests.fakes import FakeMessageStore

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
GUARD_S = 20.0


def message(cid: str) -> IncomingMessage:
    return IncomingMessage(T0, "WARD", cid, "ADT^A01", "P1", "10.0.0.1", "ascii",
                           b"MSH|...", "AA", f"ACK {cid}", ACCEPTED)


class RecordingStore(FakeMessageStore):
    """Records the control ids of each committed batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        self.batches.append([m.control_id or "" for m in batch])
        return await super().store(batch)


async def sender(writer: StoreWriter, name: str, count: int, pause_s: float = 0.0,
                 first_pause_s: float = 0.0, first: int = 0) -> list[str]:
    """One MLLP connection: sends, waits for the ACK, pauses, sends the next."""
    acks = []
    await asyncio.sleep(first_pause_s)
    for n in range(first, first + count):
        fut: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        writer.submit_nowait(message(f"{name}-{n}"),
                             lambda r, f=fut: f.set_result(r)  # type: ignore[misc]
                             if not isinstance(r, BaseException) else f.set_exception(r),
                             source=name)
        acks.append((await fut).ack)
        if pause_s:
            await asyncio.sleep(pause_s)
    return acks


async def run(writer: StoreWriter, *senders: Awaitable[Any]) -> list[Any]:
    writer.start()
    try:
        return list(await asyncio.wait_for(asyncio.gather(*senders), GUARD_S))
    finally:
        await writer.stop()


def full_batches(store: RecordingStore, senders: int) -> int:
    """Batches holding a message of at least ``senders`` senders."""
    return sum(len({c.split("-")[0] for c in b}) >= senders for b in store.batches)


async def test_busy_connections_share_each_commit() -> None:
    """Eight senders answering their ACKs after 0-14 ms: once each has been seen sending back
    to back (its second message), commits hold one message of each of them. (The quickest
    runs ahead alone until the others are known, so it finishes first: count batches of
    seven.)"""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=0.3)
    acks = await run(writer, *(sender(writer, f"c{i}", 10, pause_s=0.002 * i) for i in range(8)))
    assert [a[-1] for a in acks] == [f"ACK c{i}-9" for i in range(8)]
    assert full_batches(store, 7) >= 6


async def test_without_gathering_the_same_senders_commit_apart() -> None:
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=0.0)
    await run(writer, *(sender(writer, f"c{i}", 10, pause_s=0.004 * i) for i in range(8)))
    assert full_batches(store, 7) <= 2  # the first round arrives at once; then 4 ms apart


async def test_a_single_busy_sender_never_waits() -> None:
    """With a gathering window of ten minutes, one back-to-back sender still gets through:
    the only connection sending back to back already has its message in the batch."""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=600.0)
    (acks,) = await run(writer, sender(writer, "only", 50))
    assert acks == [f"ACK only-{n}" for n in range(50)]
    assert all(len(b) == 1 for b in store.batches)


def committed(store: RecordingStore) -> list[str]:
    return [c for b in store.batches for c in b]


async def test_a_pacing_sender_is_not_waited_for() -> None:
    """A feed that sends as events happen (here 1 s after each ACK, longer than the 0.9 s
    window) is not back to back: a busy sender beside it (40 messages, 5 ms apart) runs at
    its own pace, all its messages committed before the feed's next one. Had the writer waited
    for the feed even once, the busy sender would still be sending then."""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=0.9)
    await run(writer, sender(writer, "busy", 40, pause_s=0.005),
              sender(writer, "paced", 2, pause_s=1.0))
    order = committed(store)
    assert order.index("busy-39") < order.index("paced-1")


async def test_a_sender_slower_than_the_window_is_waited_for_once() -> None:
    """Two senders learnt as back to back; then one answers its ACKs 0.6 s late (slower than
    the 0.3 s window). The other's next batch waits for it once, in vain; after that the slow
    one is not waited for again until it answers within the window once more (waiting on every
    batch for a sender the wait never catches would hold the busy one to one message a
    window)."""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=0.3)
    writer.start()
    try:
        await asyncio.wait_for(asyncio.gather(sender(writer, "busy", 2), sender(writer, "slow", 2)),
                               GUARD_S)
        await asyncio.wait_for(asyncio.gather(sender(writer, "busy", 40),
                                              sender(writer, "slow", 2, first_pause_s=0.6)),
                               GUARD_S)
    finally:
        await writer.stop()
    order = committed(store)
    # "slow" sends its third message 0.6 s after its last ACK, when "busy" is long done.
    assert [c for c in order if c.startswith("busy-")][-1] == "busy-39"
    assert order.index("busy-39", 4) < order.index("slow-0", 4)


async def test_a_full_batch_does_not_wait() -> None:
    """With room for two messages a transaction, two busy senders fill each batch and commit at
    once, without waiting for a third back-to-back sender that has paused (0.5 s here)."""
    store = RecordingStore()
    writer = StoreWriter(store, max_batch=2, gather_s=2.0)

    async def pausing() -> None:
        await sender(writer, "c", 2)  # back to back: now waited for
        await sender(writer, "c", 2, first_pause_s=0.5, first=2)

    await run(writer, sender(writer, "a", 30, first_pause_s=0.1),
              sender(writer, "b", 30, first_pause_s=0.1), pausing())
    order = committed(store)
    assert all(len(b) <= 2 for b in store.batches)
    assert max(order.index("a-29"), order.index("b-29")) < order.index("c-2")


async def test_the_async_path_counts_as_its_connection() -> None:
    """A connection's batch or oversize frames go through ``submit``; with its source named,
    the writer sees that connection's message in the batch and does not wait for it."""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=600.0)
    writer.start()
    try:
        await asyncio.wait_for(sender(writer, "a", 2), GUARD_S)
        result = await asyncio.wait_for(writer.submit(message("a-batch"), "a"), GUARD_S)
    finally:
        await writer.stop()
    assert result.ack == "ACK a-batch"


class FailingOnceStore(RecordingStore):
    def __init__(self, fail_call: int) -> None:
        super().__init__()
        self.calls, self.fail_call = 0, fail_call

    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        self.calls += 1
        if self.calls == self.fail_call:
            raise ConnectionError("database down")
        return await super().store(batch)


async def test_a_failed_commit_while_gathering_answers_its_batch_with_the_error() -> None:
    """The failed batch's senders get the error (no ACK); the next messages commit; nothing
    is left waiting."""
    store = FailingOnceStore(fail_call=3)
    writer = StoreWriter(store, max_batch=3, gather_s=0.5)
    writer.start()
    results: dict[str, StoreResult | BaseException] = {}
    try:
        for round_ in range(4):
            futs = []
            for name in ("a", "b", "c", "d"):
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                cid = f"{name}-{round_}"

                def done(r: StoreResult | BaseException, cid: str = cid,
                         fut: asyncio.Future[None] = fut) -> None:
                    results[cid] = r
                    fut.set_result(None)
                writer.submit_nowait(message(cid), done, source=name)
                futs.append(fut)
            await asyncio.wait_for(asyncio.gather(*futs), GUARD_S)
    finally:
        await writer.stop()
    failed = sorted(c for c, r in results.items() if isinstance(r, ConnectionError))
    assert 1 <= len(failed) <= 3
    assert len(results) == 16
    assert sorted(committed(store)) == sorted(set(results) - set(failed))
    assert writer._waiting == [] and writer._sources == []


class BlockingStore(RecordingStore):
    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def store(self, batch: Sequence[IncomingMessage]) -> list[StoreResult]:
        self.entered.set()
        await asyncio.Event().wait()  # never returns: the database hangs
        raise AssertionError


async def test_stopping_during_a_commit_answers_that_batch_with_an_error() -> None:
    store = BlockingStore()
    writer = StoreWriter(store)
    writer.start()
    got: list[StoreResult | BaseException] = []
    writer.submit_nowait(message("m1"), got.append, source="a")
    await asyncio.wait_for(store.entered.wait(), GUARD_S)
    writer.submit_nowait(message("m2"), got.append, source="b")
    await writer.stop()
    assert len(got) == 2 and all(isinstance(r, ConnectionAbortedError) for r in got)


async def test_a_connection_gone_quiet_costs_one_wait() -> None:
    """Two back-to-back senders in step; one stops. The other's next message waits for it
    once (the 2 s window), in vain; after that the quiet one is not waited for again: its
    19 further messages go at once (had each waited, they would take 38 s, past the guard)."""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=2.0)
    writer.start()
    try:
        await asyncio.wait_for(asyncio.gather(sender(writer, "stays", 3),
                                              sender(writer, "stops", 3)), GUARD_S)
        acks = await asyncio.wait_for(sender(writer, "stays", 20, first=3), GUARD_S)
    finally:
        await writer.stop()
    assert acks[-1] == "ACK stays-22"


async def test_stopping_while_gathering_answers_the_waiting_with_an_error() -> None:
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=600.0)
    writer.start()
    await asyncio.wait_for(asyncio.gather(sender(writer, "a", 2), sender(writer, "b", 2)),
                           GUARD_S)
    # Both now count as back to back; "a" sends alone and the batch waits for "b".
    got: list[StoreResult | BaseException] = []
    writer.submit_nowait(message("a-late"), got.append, source="a")
    await asyncio.sleep(0.05)
    assert got == [] and "a-late" not in committed(store)
    await writer.stop()
    assert len(got) == 1 and isinstance(got[0], ConnectionAbortedError)


@pytest.mark.parametrize("gather_s", [0.0, 0.001])
async def test_acks_keep_submission_order(gather_s: float) -> None:
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=gather_s)
    acks = await run(writer, *(sender(writer, f"c{i}", 30) for i in range(4)))
    assert acks == [[f"ACK c{i}-{n}" for n in range(30)] for i in range(4)]
    order = committed(store)
    for i in range(4):
        assert [c for c in order if c.startswith(f"c{i}-")] == [f"c{i}-{n}" for n in range(30)]
