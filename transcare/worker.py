"""Composition root of the stream worker: the faust app and its agents.

``create_app(settings)`` builds the app with the stages ``settings.worker_stages`` names
(normaliser, transitions, follow-up; all by default); nothing connects at import time. The
normaliser agent is thin: decode, call :func:`adt_listener.normaliser.normalise`, publish,
record the outcome.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import faust
import structlog

from adt_listener.normaliser import Normalised, location, normalise, with_record_time
from adt_listener.store import SqlAlchemyMessageStore
from followup.notify.dispatcher import Dispatcher
from followup.notify.senders import senders_from_settings
from followup.rules import RuleError
from followup.service import FollowupContext
from schemas.topics import ADT_DEADLETTER, ADT_EVENTS, ADT_RAW, ALL_TOPICS, EPISODES
from transcare import metrics
from transcare.consuming import BatchConsumer, Records
from transcare.db.database import Database, open_database
from transcare.followup_agent import decode as decode_episode_events
from transcare.followup_agent import followup_context, plan, schedule
from transcare.kafka import KafkaPublisher, ensure_topics
from transcare.logs import library_logging_config
from transcare.outbox import OutboxPublisher
from transcare.settings import Settings
from transcare.stream_app import StreamApp
from transcare.transitions_agent import decode, handle, stale_sweep, transitions_config
from transcare.tuning import lower_priority, tune_process

log = structlog.get_logger("transcare.worker")


def create_app(settings: Settings) -> faust.App:
    """The faust app with the agents and timers of ``settings.worker_stages``, and the outbox
    publisher where those stages write outbox rows."""
    app = StreamApp(
        settings.worker_group,
        broker=f"kafka://{settings.bootstrap.replace(',', ';kafka://')}",
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        datadir=str(settings.data_dir / "worker"),
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 4),
        producer_acks=-1,
        logging_config=None,
        loghandlers=[],
    )
    if settings.kafka_idempotence:
        app.conf.producer_enable_idempotence = True
    shared: dict[str, Any] = {}
    stages = {"normaliser": _normaliser, "transitions": _transitions, "followup": _followup}
    for stage in settings.worker_stages:
        stages[stage](app, settings, shared)
    if {"transitions", "followup"} & set(settings.worker_stages):
        _outbox(app, settings, shared)  # both stages write outbox rows
    return app


def _outbox(app: faust.App, settings: Settings, shared: dict[str, Any]) -> None:
    """The outbox publisher (one at a time across processes: a database lease)."""
    holder = _holder()

    @app.task  # type: ignore[untyped-decorator]
    async def publish_outbox() -> None:
        await ensure_topics(settings.bootstrap, [t.name for t in ALL_TOPICS], settings.topic_partitions)
        publisher = await KafkaPublisher(settings.bootstrap, settings.kafka_idempotence).start()
        shared["outbox"] = OutboxPublisher(_database(settings, shared), publisher, holder)
        try:
            await shared["outbox"].run()
        finally:
            await publisher.close()


def _holder() -> str:
    """This process's name for the database leases (outbox, scheduler, stale sweep)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _wake(shared: dict[str, Any], *names: str) -> None:
    for name in names:
        if name in shared:
            shared[name].wake()


def _followup(app: faust.App, settings: Settings, shared: dict[str, Any]) -> None:
    """transitions.episodes.v1 -> tasks (database) + outbox -> followup.tasks.v1 and
    followup.notifications.v1; the ladder scheduler; the notification dispatcher."""
    ctx = followup_context(settings)  # a bad rule file stops the worker here, naming the rule
    holder = _holder()

    def noting(channels: set[str]) -> FollowupContext:
        """``ctx`` noting the channels besides the inbox its batch writes notifications on
        (each batch its own set: the next batch's would be woken before its commit)."""
        return replace(ctx, notified=channels.update)

    def wake_dispatcher(channels: set[str]) -> None:
        if channels and "dispatcher" in shared:
            shared["dispatcher"].wake(channels)

    async def planner(records: Records) -> None:
        channels: set[str] = set()
        changes = await plan(_database(settings, shared), decode_episode_events(
            [r.value for r in records if r.value is not None]), noting(channels))
        if changes:
            metrics.TASK_CHANGES.inc(changes)
            _wake(shared, "outbox")
        wake_dispatcher(channels)

    _consume(app, settings, "followup", EPISODES.name, planner)

    async def scheduler() -> None:
        channels: set[str] = set()
        try:
            fired = await schedule(_database(settings, shared), noting(channels), holder)
        except Exception as exc:
            log.warning("followup.scheduler_failed", error=type(exc).__name__)
            return
        if fired:
            _wake(shared, "outbox")
        wake_dispatcher(channels)

    _every(app, settings.scheduler_interval_s, scheduler)

    @app.task  # type: ignore[untyped-decorator]
    async def dispatch_notifications() -> None:
        senders = senders_from_settings(settings)
        shared["dispatcher"] = Dispatcher(_database(settings, shared), senders, holder)
        try:
            await shared["dispatcher"].run()
        finally:
            for sender in senders.values():
                close = getattr(sender, "aclose", None)
                if close is not None:
                    await close()


def _database(settings: Settings, shared: dict[str, Any]) -> Database:
    """The process's one database handle, opened on first use (never at import)."""
    if "db" not in shared:
        # SQLite transactions on the loop's thread: see ThreadedSqliteDatabase (inline).
        shared["db"] = open_database(settings.effective_database_url, settings.sqlite_synchronous,
                                     inline=True)
    return shared["db"]  # type: ignore[no-any-return]


def _message_store(settings: Settings, shared: dict[str, Any]) -> SqlAlchemyMessageStore:
    """The message store (the normaliser records outcomes there): on SQLite a database file
    of its own (``Settings.effective_message_store_url``), else the process's database."""
    if "messages" not in shared:
        url = settings.effective_message_store_url
        db = _database(settings, shared) if url == settings.effective_database_url else \
            open_database(url, settings.sqlite_synchronous, inline=True)
        shared["messages"] = SqlAlchemyMessageStore(db)
    return shared["messages"]  # type: ignore[no-any-return]


def _transitions(app: faust.App, settings: Settings, shared: dict[str, Any]) -> None:
    """adt.events.v1 -> episodes (database) + outbox -> transitions.episodes.v1."""
    config = transitions_config(settings)
    holder = _holder()

    async def transitions(records: Records) -> None:
        await handle(_database(settings, shared),
                     decode([r.value for r in records if r.value is not None]), config)
        _wake(shared, "outbox")

    _consume(app, settings, "transitions", ADT_EVENTS.name, transitions)

    async def sweep() -> None:
        try:
            flagged = await stale_sweep(_database(settings, shared), config, holder)
        except Exception as exc:
            log.warning("transitions.stale_sweep_failed", error=type(exc).__name__)
            return
        if flagged:
            _wake(shared, "outbox")

    _every(app, 60.0, sweep)


def _normaliser(app: faust.App, settings: Settings, shared: dict[str, Any]) -> None:
    """adt.raw.v1 -> adt.events.v1 | adt.deadletter.v1, the outcome in the message store.

    A batch's records go out through a producer of our own, one record batch per partition
    (faust's ``Topic.send`` made one small produce request per record: measured under load,
    a third of this process's time was faust's send path and aiokafka's socket writes)."""
    started = asyncio.Event()
    state: dict[str, KafkaPublisher] = {}

    @lru_cache(maxsize=1024)
    def time_zone(facility: str) -> ZoneInfo:
        return settings.time_zone(facility)

    @app.task  # type: ignore[untyped-decorator]
    async def normaliser_producer() -> None:
        await ensure_topics(settings.bootstrap, [t.name for t in ALL_TOPICS], settings.topic_partitions)
        state["publisher"] = await KafkaPublisher(settings.bootstrap, settings.kafka_idempotence).start()
        started.set()
        try:
            await asyncio.Event().wait()  # until the worker stops
        finally:
            await state["publisher"].close()

    async def normaliser(records: Records) -> None:
        store = _message_store(settings, shared)
        results = [with_record_time(normalise(r.key or b"", r.value or b"", time_zone), r.timestamp)
                   for r in records]
        results = await _undecided(store, results)
        await started.wait()
        await _publish(results, state["publisher"])
        await _record(store, results)

    _consume(app, settings, "normaliser", ADT_RAW.name, normaliser)


def _every(app: faust.App, interval_s: float, sweep: Callable[[], Awaitable[None]]) -> None:
    """Run ``sweep`` as an app task, again ``interval_s`` after each run ends. (faust's
    timers keep a fixed beat and warn "overlapping" whenever a run outlasts it, which a
    scheduler sweep of many due steps on a loaded machine does: a warning about nothing.)"""

    async def every() -> None:
        while True:
            await asyncio.sleep(interval_s)
            await sweep()

    every.__name__ = sweep.__name__
    app.task(every)


def _consume(app: faust.App, settings: Settings, stage: str, topic: str,
             handle: Callable[[Records], Awaitable[None]]) -> None:
    """Run the stage's consumer (:class:`transcare.consuming.BatchConsumer`) as an app task."""

    async def consume() -> None:
        await ensure_topics(settings.bootstrap, [t.name for t in ALL_TOPICS],
                            settings.topic_partitions)
        await BatchConsumer(
            settings.bootstrap, settings.stage_group(stage), topic, handle,
            session_timeout_s=settings.session_timeout,
            heartbeat_s=min(3.0, settings.session_timeout / 4),
            rebalance_timeout_s=settings.rebalance_timeout).run()

    consume.__name__ = f"consume_{stage}"
    app.task(consume)


async def _undecided(store: SqlAlchemyMessageStore,
                     results: list[Normalised]) -> list[Normalised]:
    """Drop results for messages that already have an outcome: a resend by the relay after a
    crash or broker restart is processed once."""
    keys = [(r.outcome.message_id, r.outcome.received_at) for r in results
            if r.outcome is not None and r.outcome.received_at is not None]
    done = await store.decided(keys)
    return [r for r in results if r.outcome is None or r.outcome.message_id not in done]


async def _publish(results: list[Normalised], publisher: KafkaPublisher) -> None:
    """Send a batch's events and dead letters, keyed by patient (each topic in batch order),
    and wait until the broker acknowledged all of them."""
    events = [(r.key, r.value) for r in results if r.doc is not None]
    dead = [(r.key, r.value) for r in results if r.doc is None]
    await asyncio.gather(*(publisher.publish(topic, records) for topic, records in
                           ((ADT_EVENTS.name, events), (ADT_DEADLETTER.name, dead)) if records))
    now = datetime.now(UTC)
    for r in results:
        if r.doc is not None:
            metrics.EVENTS_NORMALISED.labels(r.trigger).inc()
        else:
            metrics.DEADLETTERS.labels(location(r)).inc()
            log.warning("normaliser.deadlettered", message_id=r.deadletter.message_id
                        if r.deadletter else None, location=location(r))
        if r.received_at is not None:
            metrics.PROCESSING_LATENCY.observe(max(0.0, (now - r.received_at).total_seconds()))


async def _record(store: SqlAlchemyMessageStore, results: list[Normalised]) -> None:
    outcomes = [r.outcome for r in results if r.outcome is not None]
    started = time.monotonic()
    while True:
        try:
            await store.record_outcomes(outcomes, datetime.now(UTC))
            return
        except Exception as exc:  # database busy or down: retry, never drop an outcome
            log.warning("normaliser.record_failed", error=type(exc).__name__,
                        waited=round(time.monotonic() - started, 1))
            await asyncio.sleep(1.0)


def run(settings: Settings) -> int:
    """Run the worker until SIGINT/SIGTERM."""
    from transcare.processes import _use_uvloop

    _use_uvloop()
    try:
        app = create_app(settings)
    except RuleError as exc:
        print(f"transcare worker: rule table: {exc}", file=sys.stderr)
        return 2
    worker = faust.Worker(app, loglevel=settings.log_level if settings.log_level == "DEBUG" else "WARNING",
                          quiet=True, redirect_stdouts=False,
                          logging_config=library_logging_config(settings.log_level))
    worker.spinner = None  # a terminal progress spinner has no place in a service's logs
    tune_process()
    niceness = lower_priority(settings.worker_nice)
    inputs = {"normaliser": ADT_RAW.name, "transitions": ADT_EVENTS.name, "followup": EPISODES.name}
    print(f"worker ({', '.join(settings.worker_stages)}) consuming "
          f"{', '.join(f'{inputs[s]} (group {settings.stage_group(s)})' for s in settings.worker_stages)}"
          f" from {settings.bootstrap}, CPU priority nice {niceness}", flush=True)
    worker.execute_from_commandline()
    return 0
