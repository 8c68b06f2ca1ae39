"""The notification dispatcher: claims due e-mail and webhook rows and delivers them.

Any number of dispatchers (one per worker process) may run over one database: a claim moves a
row's ``next_attempt_at`` past the claim window in the claiming transaction (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, the write lock on SQLite), so no two dispatchers take the same row,
and an outcome is written only if the row is still as claimed. Channels are isolated: each
has its own concurrency limit and its own loop in :meth:`Dispatcher.run`, and every send has
a timeout, so a dead SMTP server never delays webhooks. Each outcome is its own small
transaction: ``delivered``, ``failed`` with the next try from :mod:`followup.notify.retry`,
or ``dead``. Delivery is at least once (a crash after a send and before its outcome sends it
again once the claim expires); receivers drop repeats by the idempotency key.

The table's writers and readers (``create_notifications``, ``notification_id``, ``inbox``,
``mark_read``, ``delivery_problems``, ``delivery_counts``) live in :mod:`followup.notify.store`
and are re-exported here. Logs carry ids, channel, attempt and reason: never an address or
the content.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import structlog

from followup.notify.retry import next_attempt
from followup.notify.senders import DeliveryError, Sender
from followup.notify.store import (
    SENT_CHANNELS,
    Contacts,
    Job,
    claim_due,
    create_notifications,
    delivery_counts,
    delivery_problems,
    inbox,
    mark_read,
    notification_id,
    record_delivered,
    record_failed,
    staff_contacts,
)
from transcare.db.database import Database

__all__ = ["Dispatcher", "create_notifications", "delivery_counts", "delivery_problems", "inbox",
           "mark_read", "notification_id"]

log = structlog.get_logger("followup.notify")
_MISSING = {"email": "no e-mail address for recipient", "webhook": "no webhook URL for recipient"}
_SETTING = {"email": "TRANSCARE_SMTP_HOST", "webhook": "TRANSCARE_WEBHOOK_SECRET"}


class ChannelNotConfigured(DeliveryError):
    """The channel has no sender (its settings are unset): transient, retried on the schedule."""


class Dispatcher:
    """Delivers pending and failed e-mail and webhook notifications.

    Arguments:
        db: the database holding ``notifications`` and ``staff``.
        senders: by channel (``email``, ``webhook``); a channel without a sender records its
            notifications as failed ("not configured") and retries them.
        holder: this dispatcher's name in the logs.
        clock: the current time (injected for tests).
        contacts: ``(conn, staff_ids) -> {staff_id: (email, webhook_url)}``; default: the
            staff directory table.
        batch: rows claimed per dispatch; claim_s: how long a claim holds a row.
        send_timeout_s: the limit on one send; concurrency: sends in flight per channel.

    Raises:
        ValueError: ``claim_s`` not above ``send_timeout_s`` (a claim must outlive a send).
    """

    def __init__(self, db: Database, senders: Mapping[str, Sender], holder: str = "dispatcher",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 contacts: Contacts = staff_contacts, batch: int = 100, claim_s: float = 60.0,
                 send_timeout_s: float = 30.0, concurrency: int = 8, poll_s: float = 1.0) -> None:
        if claim_s <= send_timeout_s:
            raise ValueError("claim_s must be greater than send_timeout_s")
        self._db, self._senders, self._clock, self._contacts = db, dict(senders), clock, contacts
        self._batch, self._claim_s, self._timeout, self._poll = batch, claim_s, send_timeout_s, poll_s
        self._log = log.bind(holder=holder)
        self._limits = {ch: asyncio.Semaphore(concurrency) for ch in SENT_CHANNELS}
        self._wake = {ch: asyncio.Event() for ch in SENT_CHANNELS}
        self._told_unconfigured: set[str] = set()

    def wake(self, channels: Iterable[str] | None = None) -> None:
        """New notifications were committed (on ``channels``; None: on any): dispatch them
        without waiting for the next poll."""
        for channel, event in self._wake.items():
            if channels is None or channel in channels:
                event.set()

    async def dispatch_once(self, channels: Sequence[str] = SENT_CHANNELS) -> int:
        """Claim one batch of due rows on ``channels``, send them concurrently and record each
        outcome as it comes (``inbox`` is never claimed: its rows are delivered when
        written). Returns the number of rows claimed. Raises what the database raises while
        claiming; send and record failures are handled per row."""
        now, claim = self._clock(), timedelta(seconds=self._claim_s)
        sent = [ch for ch in channels if ch in SENT_CHANNELS]
        jobs = await self._db.write(
            lambda c: claim_due(c, sent, now, self._batch, claim, self._contacts))
        if jobs:
            deadline = asyncio.get_running_loop().time() + self._claim_s - self._timeout
            await asyncio.gather(*(self._attempt(job, deadline) for job in jobs))
        return len(jobs)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Dispatch until ``stop`` is set (or the task is cancelled): one loop per channel,
        polling every ``poll_s`` or at once after :meth:`wake`. Database errors are logged
        and retried with backoff."""
        stop = stop or asyncio.Event()
        await asyncio.gather(*(self._loop(channel, stop) for channel in SENT_CHANNELS))

    async def _loop(self, channel: str, stop: asyncio.Event) -> None:
        delay = self._poll
        while not stop.is_set():
            try:
                claimed, delay = await self.dispatch_once((channel,)), self._poll
            except Exception as exc:  # database unreachable: retry, never drop
                self._log.warning("notify.dispatch_failed", channel=channel,
                                  error=type(exc).__name__)
                claimed, delay = 0, min(delay * 2, 10.0)  # a wake now names its channel
            if claimed < self._batch:
                await _wait_any(self._wake[channel], stop, delay)
                self._wake[channel].clear()

    async def _attempt(self, job: Job, deadline: float) -> None:
        async with self._limits[job.channel]:
            if asyncio.get_running_loop().time() > deadline:
                # Queued too long: leave it to the claim's expiry rather than risk a second
                # dispatcher sending it too.
                self._log.info("notify.deferred", notification_id=job.id, channel=job.channel)
                return
            error = await self._send(job)
        try:
            await self._record(job, error)
        except Exception as exc:  # the row is due again when its claim expires
            self._log.error("notify.record_failed", notification_id=job.id, channel=job.channel,
                            error=type(exc).__name__)

    async def _send(self, job: Job) -> DeliveryError | None:
        try:
            sender, address = self._route(job)
            await asyncio.wait_for(sender.send(job.notice, address), self._timeout)
        except DeliveryError as exc:
            return exc
        except TimeoutError:
            return DeliveryError(f"{job.channel}: no answer within {self._timeout:g}s")
        except Exception as exc:  # a sender bug must not stop the other deliveries
            return DeliveryError(f"{job.channel}: unexpected {type(exc).__name__}")
        return None

    def _route(self, job: Job) -> tuple[Sender, str]:
        """The sender and address for a job. Raises :class:`DeliveryError`: permanent when
        the recipient has no address, transient when the channel is not configured."""
        if job.address is None:
            raise DeliveryError(f"{job.channel}: recipient not in the staff directory", True)
        if not job.address:
            raise DeliveryError(f"{job.channel}: {_MISSING[job.channel]}", permanent=True)
        sender = self._senders.get(job.channel)
        if sender is None:
            raise ChannelNotConfigured(f"{job.channel}: channel not configured")
        return sender, job.address

    async def _record(self, job: Job, error: DeliveryError | None) -> None:
        now, attempt = self._clock(), job.attempts + 1
        fields = {"notification_id": job.id, "task_id": job.notice.task_id,
                  "channel": job.channel, "attempt": attempt}
        if error is None:
            written = await self._db.write(lambda c: record_delivered(c, job, now))
            self._log.info("notify.delivered", **fields)
        else:
            retry_at = None if error.permanent else next_attempt(attempt, now, job.id)
            written = await self._db.write(lambda c: record_failed(c, job, error.reason, retry_at))
            event = "notify.failed" if retry_at else "notify.dead"
            if isinstance(error, ChannelNotConfigured) and retry_at:
                # one warning a channel, not one a notification and try: without SMTP every
                # e-mail notification failed up to eight times, each a warning line
                if job.channel not in self._told_unconfigured:
                    self._told_unconfigured.add(job.channel)
                    self._log.warning("notify.channel_not_configured", channel=job.channel,
                                      setting=_SETTING.get(job.channel, ""))
                self._log.debug(event, reason=error.reason, retry_at=retry_at.isoformat(),
                                **fields)
            else:
                self._log.warning(event, reason=error.reason,
                                  retry_at=retry_at and retry_at.isoformat(), **fields)
        if not written:
            self._log.warning("notify.outcome_not_recorded", **fields)


async def _wait_any(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    """Return when either event is set or after ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
