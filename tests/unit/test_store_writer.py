"""StoreWriter's group commit: which messages share a transaction, and that nobody waits long.

The gathering windows here are long (tenths of a second to minutes) and the senders' pauses
short, so each case holds on a loaded machine; the ``wait_for`` guards only stop a test that
would otherwise hang if the writer waited when it must not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from adt_listener.store import ACCEPTED, IncomingMessage, StoreResult
from adt_listener.writer import ACTIVE_WINDOW_S, StoreWriter
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
                 first_pause_s: float = 0.0) -> list[str]:
    """One MLLP connection: sends, waits for the ACK, pauses, sends the next."""
    acks = []
    await asyncio.sleep(first_pause_s)
    for n in range(count):
        fut: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        writer.submit_nowait(message(f"{name}-{n}"),
                             lambda r, f=fut: f.set_result(r)  # type: ignore[misc]
                             if not isinstance(r, BaseException) else f.set_exception(r),
                             source=name)
        acks.append((await fut).ack)
        if pause_s:
            await asyncio.sleep(pause_s)
    return acks


async def run(writer: StoreWriter, *senders: object) -> list[list[str]]:
    writer.start()
    try:
        return await asyncio.wait_for(asyncio.gather(*senders), GUARD_S)  # type: ignore[arg-type]
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
    writer = StoreWriter(store, gather_s=5.0, prompt_s=0.5, active_s=0.5)
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
    writer = StoreWriter(store, gather_s=600.0, prompt_s=1.0)
    (acks,) = await run(writer, sender(writer, "only", 50))
    assert acks == [f"ACK only-{n}" for n in range(50)]
    assert all(len(b) == 1 for b in store.batches)


async def test_a_pacing_sender_is_not_waited_for() -> None:
    """A feed that sends as events happen (here: 0.3 s after each ACK) is not back to back,
    so a busy sender beside it is never held for it, however long the window."""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=600.0, prompt_s=0.1)
    busy, paced = await run(writer, sender(writer, "busy", 200, pause_s=0.001),
                            sender(writer, "paced", 3, pause_s=0.3))
    assert busy[-1] == "ACK busy-199" and paced[-1] == "ACK paced-2"


async def test_a_connection_gone_quiet_is_forgotten() -> None:
    """Two back-to-back senders in step, then silence longer than ``ACTIVE_WINDOW_S``: the
    next messages of one of them are not held for the other, however long the window."""
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=600.0, prompt_s=1.0)
    writer.start()
    try:
        await asyncio.wait_for(asyncio.gather(sender(writer, "stays", 3),
                                              sender(writer, "stops", 3)), GUARD_S)
        await asyncio.sleep(ACTIVE_WINDOW_S * 4)
        acks = await asyncio.wait_for(sender(writer, "stays", 20), GUARD_S)
    finally:
        await writer.stop()
    assert acks[-1] == "ACK stays-19"


async def test_stopping_while_gathering_answers_the_waiting_with_an_error() -> None:
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=600.0, prompt_s=1.0, active_s=600.0)
    writer.start()
    await asyncio.wait_for(asyncio.gather(sender(writer, "a", 2), sender(writer, "b", 2)),
                           GUARD_S)
    # Both now count as back to back; "a" sends alone and the batch waits for "b".
    got: list[StoreResult | BaseException] = []
    writer.submit_nowait(message("a-late"), got.append, source="a")
    await asyncio.sleep(0.05)
    assert got == [] and "a-late" not in {c for b in store.batches for c in b}
    await writer.stop()
    assert len(got) == 1 and isinstance(got[0], ConnectionAbortedError)


@pytest.mark.parametrize("gather_s", [0.0, 0.001])
async def test_acks_keep_submission_order(gather_s: float) -> None:
    store = RecordingStore()
    writer = StoreWriter(store, gather_s=gather_s)
    acks = await run(writer, *(sender(writer, f"c{i}", 30) for i in range(4)))
    assert acks == [[f"ACK c{i}-{n}" for n in range(30)] for i in range(4)]
    committed = [c for b in store.batches for c in b]
    for i in range(4):
        assert [c for c in committed if c.startswith(f"c{i}-")] == [f"c{i}-{n}" for n in range(30)]
