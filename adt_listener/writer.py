"""Group commit: messages from all connections are stored in shared transactions.

A connection hands a message to :meth:`StoreWriter.submit_nowait` with a callback (or awaits
:meth:`StoreWriter.submit`); one task takes whatever is waiting, commits it in one transaction
and then calls every callback in submission order. While one transaction commits, the next
batch gathers, so throughput grows with concurrency and no ACK is sent before its commit.

Each commit costs the database about as much as the rows it writes (on PostgreSQL a
transaction's WAL flush, its statement's round trip and planning: about 0.17 ms of the
server's CPU for a batch of two messages in ``bench/e2e``). So a batch may wait a moment
(``gather_s``, 1 ms by default) for the connections that send back to back (their last
message came within ``gather_s`` of its ACK) and have nothing waiting yet: with eight busy
senders the batch holds all eight instead of the two or three that arrived during the last
commit. It never waits when every such connection already has a message in it (one busy
connection, or all of them), so a single sender's rate is as without gathering; it never
waits for a sender that paces its messages (a feed sending as events happen) or answers its
ACKs more slowly than ``gather_s``; a connection it waited for in vain (slower this time, or
gone quiet) is not waited for again until it answers an ACK within ``gather_s`` once more, so
it costs at most one wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable

import structlog

from adt_listener.store import ACCEPTED, IncomingMessage, MessageStore, PendingMessage, StoreResult
from transcare import metrics

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
        gather_s: longest wait for connections sending back to back before a commit (0: none).
            A connection sends back to back when its message came within ``gather_s`` of the
            ACK of its previous one (so a wait would have caught it).
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, store: MessageStore, max_batch: int = 256,
                 on_commit: Callable[[list[PendingMessage]], None] | None = None,
                 gather_s: float = 0.001,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._max = max_batch
        self._gather_s = gather_s
        self._clock = clock
        self._waiting: list[_Item] = []
        self._sources: list[Hashable | None] = []  # beside _waiting: who sent each item
        self._answered: dict[Hashable, float] = {}  # connection -> when its last was committed
        self._prompt: set[Hashable] = set()  # connections sending back to back
        self._committing: list[_Item] = []  # the batch in the store, not yet answered
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_commit = on_commit or (lambda _: None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # The batch the store was committing when cancelled gets no ACK either (it may or
        # may not be stored: the sender sends it again, and a stored one is answered as a
        # resend).
        waiting, self._waiting = self._committing + self._waiting, []
        self._committing = []
        self._sources.clear()
        for _, done in waiting:
            _call(done, ConnectionAbortedError("listener stopping"))

    def submit_nowait(self, item: IncomingMessage, done: Done,
                      source: Hashable | None = None) -> None:
        """Queue one message; ``done`` gets its result after the commit, or the store's error.

        Callbacks run in submission order, so one connection's ACKs keep their order.
        ``source`` names the connection (for gathering; ``None``: not counted).
        """
        self._waiting.append((item, done))
        self._sources.append(source)
        if source is not None and self._gather_s > 0:
            now = self._clock()
            answered = self._answered.pop(source, None)
            if answered is not None and now - answered <= self._gather_s:
                self._prompt.add(source)
            else:
                self._prompt.discard(source)
        self._arrived.set()

    async def submit(self, item: IncomingMessage, source: Hashable | None = None) -> StoreResult:
        """Store one message; returns once it is committed (or raises if the store failed)."""
        fut: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()

        def done(result: StoreResult | BaseException) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        self.submit_nowait(item, done, source)
        return await fut

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            if self._gather_s > 0 and self._prompt:
                await self._gather()
            batch, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
            sources, self._sources = self._sources[: self._max], self._sources[self._max :]
            await self._commit(batch)
            if self._gather_s > 0:
                self._note_answered(sources)

    def _note_answered(self, sources: list[Hashable | None]) -> None:
        now = self._clock()
        oldest = now - self._gather_s
        if self._answered:
            self._answered = {s: t for s, t in self._answered.items() if t >= oldest}
        for source in sources:
            if source is not None:
                self._answered[source] = now

    async def _gather(self) -> None:
        """Wait at most ``gather_s`` while a connection sending back to back has nothing
        waiting; those still missing then are not waited for again until they answer an ACK
        within ``gather_s`` once more."""
        until = self._clock() + self._gather_s
        while len(self._waiting) < self._max and not self._prompt.issubset(self._sources):
            remaining = until - self._clock()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
        else:
            return
        self._prompt.intersection_update(self._sources)

    async def _commit(self, batch: list[_Item]) -> None:
        self._committing = batch
        try:
            results = await self._store.store([item for item, _ in batch])
        except Exception as exc:  # the store is down: every waiter gets the error, no ACK
            self._committing = []
            log.error("store.commit_failed", error=type(exc).__name__, batch=len(batch))
            for _, done in batch:
                _call(done, exc)
            return
        self._committing = []
        metrics.STORE_BATCH.observe(len(batch))
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
