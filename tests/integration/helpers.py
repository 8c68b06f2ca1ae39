"""Helpers for integration tests: reading the store and the event topic."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.engine import make_url

from transcare.db.migrate import upgrade_service
from transcare.settings import Settings

# The PostgreSQL server the PostgreSQL-backed tests use (.ci/run sets it); unset, they report
# as not run.
POSTGRES_ENV = "TRANSCARE_TEST_POSTGRES_URL"


async def migrate(settings: Settings) -> None:
    """``transcare db upgrade`` for these settings: the database and the message store (on
    SQLite a file of its own). Alembic's env.py runs its own loop: from a thread."""
    await asyncio.to_thread(upgrade_service, settings)


def store_rows(db: Path, where: str = "1=1") -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(f"SELECT * FROM messages WHERE {where} ORDER BY id").fetchall()
    finally:
        conn.close()


async def wait_until_settled(db: Path, timeout_s: float = 90.0) -> None:
    """Wait until no stored message is still 'accepted' (each is processed or dead-lettered)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = len(store_rows(db, "status = 'accepted'"))
        if pending == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{pending} messages still not processed after {timeout_s}s")
        await asyncio.sleep(0.25)


async def read_events(bootstrap: str, topic: str, event_ids: set[str],
                      timeout_s: float = 90.0,
                      keys: set[bytes] | None = None) -> dict[str, list[dict[str, object]]]:
    """Consume ``topic`` from the start until every event id was seen (or time runs out).

    Event ids (``MSH-4|MSH-10``) rather than store ids: tests share the broker, not the store.
    With ``keys`` (patient keys), only the partitions those keys hash to are read: the
    session's topic holds every earlier test's events too.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: dict[str, list[dict[str, object]]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if keys:
            partitions = sorted({DefaultPartitioner()(k, partitions, partitions) for k in keys})
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        while time.monotonic() < deadline and not event_ids <= set(seen):
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    value = json.loads(record.value)
                    if value["event_id"] in event_ids:
                        seen.setdefault(value["event_id"], []).append(value)
    finally:
        await consumer.stop()
    return seen


@asynccontextmanager
async def fresh_postgres_database(server: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database on the PostgreSQL ``server`` for one test; its URL. Dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        make_url(server).set(drivername="postgresql").render_as_string(hide_password=False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
