"""Composition root of the listener process: store, writer, responder, MLLP server, relay."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from adt_listener.acknowledge import Responder
from adt_listener.relay import Publisher, Relay
from adt_listener.server import MllpServer, ServerLimits
from adt_listener.store import SqlAlchemyMessageStore
from adt_listener.writer import StoreWriter
from schemas.topics import ALL_TOPICS
from transcare.db.database import open_database
from transcare.kafka import KafkaPublisher, ensure_topics
from transcare.settings import Settings

log = structlog.get_logger("adt_listener")


@dataclass
class Listener:
    server: MllpServer
    writer: StoreWriter
    relay: Relay
    store: SqlAlchemyMessageStore
    addresses: list[tuple[str, int]]
    _relay_task: asyncio.Task[None]
    _dispose: Callable[[], Awaitable[None]]

    async def stop(self) -> None:
        """Stop accepting, finish committing, stop the relay, close the database."""
        await self.server.stop()
        await self.writer.stop()
        await self.relay.stop()
        self._relay_task.cancel()
        await asyncio.gather(self._relay_task, return_exceptions=True)
        await self.store.close()
        await self._dispose()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Server TLS context; with a client CA set, client certificates are required."""
    if not settings.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    if settings.tls_client_ca:
        ctx.load_verify_locations(settings.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def start_listener(settings: Settings,
                         connect: Callable[[], Awaitable[Publisher]] | None = None) -> Listener:
    """Wire and start the listener. ``connect`` overrides the Kafka publisher (tests)."""
    db = open_database(settings.effective_message_store_url, settings.sqlite_synchronous)
    store = SqlAlchemyMessageStore(db)

    async def kafka() -> Publisher:
        await ensure_topics(settings.bootstrap, [t.name for t in ALL_TOPICS],
                            settings.topic_partitions)
        return await KafkaPublisher(settings.bootstrap, settings.kafka_idempotence).start()

    relay = Relay(store, connect or kafka, republish_after_s=settings.effective_republish_after)
    writer = StoreWriter(store, on_commit=relay.handoff,
                         gather_s=settings.listener_gather_ms / 1000)
    writer.start()
    limits = ServerLimits(settings.max_message_bytes, settings.idle_timeout_s,
                          settings.max_connections)
    responder = Responder(writer, settings.facilities, settings.require_known_facility)
    server = MllpServer(responder, limits, tls_context(settings))
    addresses = await server.start(settings.mllp_host, settings.mllp_port)
    relay_task = asyncio.get_running_loop().create_task(relay.run(), name="relay")
    log.info("listener.started", addresses=[f"{h}:{p}" for h, p in addresses],
             tls=bool(settings.tls_cert))
    return Listener(server, writer, relay, store, addresses, relay_task, db.dispose)
