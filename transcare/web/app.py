"""``create_app(settings)``: the FastAPI application. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from adt_listener.store import SqlAlchemyMessageStore, StoredMessage, oldest_in_flight_age
from followup.notify.store import delivery_counts
from followup.task_store import count_tasks
from transcare import __version__
from transcare.db.database import Database, open_database, ping
from transcare.followup_agent import followup_context
from transcare.kafka import bootstrap_reachable
from transcare.settings import Settings
from transcare.transitions_agent import transitions_config
from transcare.web.consumer_lag import ConsumerLag
from transcare.web.dashboard import render_dashboard
from transcare.web.directory_api import directory_router
from transcare.web.episodes_api import episodes_router
from transcare.web.inbox import inbox_router
from transcare.web.live import SAMPLE_EVERY_S, LiveSampler, read_sample
from transcare.web.metrics_view import metrics_registry, render_metrics
from transcare.web.tasks_api import tasks_router
from transitions.episode_queries import stream_stats

log = structlog.get_logger(__name__)
Status = Literal["accepted", "processed", "deadlettered", "rejected"]


class MessageOut(BaseModel):
    """A stored message as the API shows it: metadata only, never the message content."""

    id: int
    facility: str
    control_id: str | None
    type: str
    received_at: datetime
    ack_code: str
    status: Status
    reason: str | None
    published_at: datetime | None
    processed_at: datetime | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _out(m: StoredMessage) -> MessageOut:
    return MessageOut(
        id=m.id, facility=m.sending_facility, control_id=m.control_id, type=m.message_type,
        received_at=_utc(m.received_at) or datetime.now(UTC), ack_code=m.ack_code,
        status=m.status,  # type: ignore[arg-type]
        reason=m.reason, published_at=_utc(m.published_at), processed_at=_utc(m.processed_at),
    )


def create_app(settings: Settings) -> FastAPI:
    db = open_database(settings.effective_database_url, settings.sqlite_synchronous)
    messages_url = settings.effective_message_store_url
    messages_db = db if messages_url == settings.effective_database_url else open_database(
        messages_url, settings.sqlite_synchronous)
    store = SqlAlchemyMessageStore(messages_db)
    # Channels without a sender: their notifications wait (see the ops page), not "failing".
    unconfigured = tuple(channel for channel, configured in
                         (("email", settings.smtp_host), ("webhook", settings.webhook_secret))
                         if not configured)

    lag = ConsumerLag(settings.bootstrap, settings.stage_group)
    lags: dict[str, int | None] = {}  # the last reading, every SAMPLE_EVERY_S

    async def stats() -> dict[str, Any]:
        now = datetime.now(UTC)
        return {**await db.run(lambda c: ops_stats(c, now)),
                "oldest_in_flight_s": await messages_db.run(lambda c: oldest_in_flight_age(c, now)),
                "unconfigured_channels": unconfigured, "consumer_lag": dict(lags)}

    live = LiveSampler(lambda at: read_sample(metrics_registry().collect(), at))

    stopping = asyncio.Event()

    async def sample_live() -> None:
        # the flag as well as the cancel: a library that swallows a cancel (asyncio.wait_for
        # on Python 3.11 can) must not keep the sampler, and the shutdown, going
        while not stopping.is_set():
            try:
                live.sample()
            except Exception as exc:  # the page shows what it has; the API goes on
                log.warning("web.live_sample_failed", error=type(exc).__name__)
            lags.update(await lag.read())
            try:
                await asyncio.wait_for(stopping.wait(), SAMPLE_EVERY_S)
            except TimeoutError:
                pass

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sampler = asyncio.create_task(sample_live())
        yield
        stopping.set()
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        await lag.close()
        await db.dispose()
        if messages_db is not db:
            await messages_db.dispose()

    app = FastAPI(title="transcare", version=__version__, lifespan=lifespan,
                  description="Transitional-care service: ADT ingest, episodes, follow-up.")
    app.include_router(directory_router(db))
    app.include_router(episodes_router(db, transitions_config(settings)))
    followup_ctx = followup_context(settings)
    app.include_router(tasks_router(db, followup_ctx))
    app.include_router(inbox_router(db, followup_ctx))

    @app.get("/api/messages", response_model=list[MessageOut], tags=["messages"])
    async def list_messages(
        control_id: str | None = None, facility: str | None = None,
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=1, description="page: ids below this")] = None,
    ) -> list[MessageOut]:
        """Stored messages, newest first: id, facility, control id, type, received time,
        ACK code, status and the reason for a rejection or dead letter."""
        rows = await store.find(control_id=control_id, facility=facility, status=status,
                                limit=limit, before_id=before_id)
        return [_out(r) for r in rows]

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the web process is serving."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"],
             responses={503: {"model": Health}})
    async def readyz() -> JSONResponse:
        """Readiness: the database answers and the Kafka broker accepts connections."""
        checks = {"database": await _database_ok(db),
                  **({} if messages_db is db else {"message_store": await _database_ok(messages_db)}),
                  "broker": await _broker_ok(settings.bootstrap)}
        ok = all(v == "ok" for v in checks.values())
        body = Health(status="ok" if ok else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["health"])
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: every process's metrics plus store-derived gauges."""
        body, content_type = render_metrics(await store.backlog(), await store.count_by_status(),
                                            await stats())
        return PlainTextResponse(body, media_type=content_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard(request: Request) -> HTMLResponse:
        counts = await store.count_by_status()
        recent = await store.find(limit=15, status="rejected")
        dead = await store.find(limit=15, status="deadlettered")
        return HTMLResponse(render_dashboard(counts, await store.backlog(), recent + dead,
                                             await stats(), live.live(),
                                             bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))))

    return app


def ops_stats(conn: Connection, now: datetime) -> dict[str, Any]:
    """Counts for the ops page and /metrics: episodes, tasks, notification deliveries. (The
    age of the oldest message not yet normalised comes from the message store.)"""
    return {**stream_stats(conn), "tasks": count_tasks(conn, now),
            "notifications": delivery_counts(conn)}


async def _database_ok(db: Database) -> str:
    try:
        await asyncio.wait_for(ping(db), 5.0)
        return "ok"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"


async def _broker_ok(bootstrap: str) -> str:
    if await bootstrap_reachable(bootstrap, 1.0):
        return "ok"
    return f"unavailable: no broker answers at {bootstrap}"
