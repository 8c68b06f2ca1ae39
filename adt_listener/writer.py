"""Group commit: messages from all connections are stored in shared transactions.

A connection hands a message to :meth:`StoreWriter.submit_nowait` with a callback (or awaits
:meth:`StoreWriter.submit`); one task takes whatever is waiting, commits it in one transaction
and then calls every callback in submission order. While one transaction commits, the next
batch gathers, so throughput grows with concurrency and no ACK is sent before its commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from adt_listener.store import ACCEPTED, IncomingMessage, MessageStore, PendingMessage, StoreResult

log = structlog.get_logger("adt_listener.writer")
Done = Callable[[StoreResult | BaseException], None]
_Item = tuple[IncomingMessage, Done]


class StoreWriter:
    """Batches submitted messages into store transactions.

    Arguments:
        store: where messages are committed.
        max_batch: most messages per transaction.
        on_commit: called after each commit with the newly stored accepted messages, in
            commit order (hands them to the relay without a database read).
    """

    def __init__(self, store: MessageStore, max_batch: int = 256,
                 on_commit: Callable[[list[PendingMessage]], None] | None = None) -> None:
        self._store = store
        self._max = max_batch
        self._waiting: list[_Item] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_commit = on_commit or (lambda _: None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        waiting, self._waiting = self._waiting, []
        for _, done in waiting:
            _call(done, ConnectionAbortedError("listener stopping"))

    def submit_nowait(self, item: IncomingMessage, done: Done) -> None:
        """Queue one message; ``done`` gets its result after the commit, or the store's error.

        Callbacks run in submission order, so one connection's ACKs keep their order.
        """
        self._waiting.append((item, done))
        self._arrived.set()

    async def submit(self, item: IncomingMessage) -> StoreResult:
        """Store one message; returns once it is committed (or raises if the store failed)."""
        fut: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()

        def done(result: StoreResult | BaseException) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        self.submit_nowait(item, done)
        return await fut

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            batch, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
            await self._commit(batch)

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            results = await self._store.store([item for item, _ in batch])
        except Exception as exc:  # the store is down: every waiter gets the error, no ACK
            log.error("store.commit_failed", error=type(exc).__name__, batch=len(batch))
            for _, done in batch:
                _call(done, exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            _call(done, result)
        committed = [item.pending(result.id) for (item, _), result in zip(batch, results, strict=True)
                     if result.id is not None and item.status == ACCEPTED]
        try:
            self._on_commit(committed)
        except Exception as exc:  # the relay finds these rows in the store on its next poll
            log.error("store.on_commit_failed", error=type(exc).__name__)


def _call(done: Done, result: StoreResult | BaseException) -> None:
    try:
        done(result)
    except Exception as exc:  # one connection's failure must not stop the others' ACKs
        log.error("store.callback_failed", error=type(exc).__name__)
