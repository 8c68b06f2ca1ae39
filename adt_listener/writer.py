"""Group commit: messages from all connections are stored in shared transactions.

Each connection awaits :meth:`StoreWriter.submit`; one task drains whatever is waiting, commits
it in one transaction and resolves every waiter. While one transaction commits, the next batch
gathers, so throughput grows with concurrency and no ACK is sent before its commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from adt_listener.store import ACCEPTED, IncomingMessage, MessageStore, PendingMessage, StoreResult

log = structlog.get_logger("adt_listener.writer")
_Item = tuple[IncomingMessage, "asyncio.Future[StoreResult]"]


class StoreWriter:
    """Batches ``submit`` calls into store transactions.

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
        for _, fut in waiting:
            if not fut.done():
                fut.set_exception(ConnectionAbortedError("listener stopping"))

    async def submit(self, item: IncomingMessage) -> StoreResult:
        """Store one message; returns once it is committed (or raises if the store failed)."""
        fut: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, fut))
        self._arrived.set()
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
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
        committed = [item.pending(result.id) for (item, _), result in zip(batch, results, strict=True)
                     if result.id is not None and item.status == ACCEPTED]
        try:
            self._on_commit(committed)
        except Exception as exc:  # the relay finds these rows in the store on its next poll
            log.error("store.on_commit_failed", error=type(exc).__name__)
