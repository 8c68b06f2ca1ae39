"""Upgrading a SQLite install from one database file to the message store's own file: the
messages an earlier version stored in ``transcare.db`` move, ids kept, and new ids follow."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from adt_listener.store import ACCEPTED, PROCESSED, Outcome, SqlAlchemyMessageStore
from tests.contract.test_message_store import msg
from transcare.db.database import open_database
from transcare.db.migrate import move_messages_to_store, upgrade, upgrade_service
from transcare.settings import Settings

T1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def test_messages_in_the_service_database_move_to_the_store_with_their_ids(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    # The layout before the split: every table, messages included, in transcare.db.
    await asyncio.to_thread(upgrade, settings.effective_database_url)
    old = open_database(settings.effective_database_url)
    try:
        stored = await SqlAlchemyMessageStore(old).store(
            [msg("OLD-1"), msg("OLD-2"), msg(None), msg("OLD-3")])
        await SqlAlchemyMessageStore(old).record_outcomes(
            [Outcome(stored[0].id or 0, PROCESSED)], T1)
    finally:
        await old.dispose()
    ids = [r.id for r in stored]

    assert await asyncio.to_thread(upgrade_service, settings) == 4
    assert await asyncio.to_thread(move_messages_to_store, settings) == 0  # nothing left to move

    main = open_database(settings.effective_database_url)
    store_db = open_database(settings.effective_message_store_url)
    try:
        assert await SqlAlchemyMessageStore(main).find(limit=10) == []
        store = SqlAlchemyMessageStore(store_db)
        moved = sorted(await store.find(limit=10), key=lambda m: m.id)
        assert [m.id for m in moved] == ids
        assert [m.status for m in moved] == [PROCESSED, ACCEPTED, ACCEPTED, ACCEPTED]
        assert [p.id for p in await store.unpublished(10)] == ids[1:]  # the relay publishes these
        resent = await store.store([msg("OLD-2"), msg("NEW-1")])
        assert resent[0].duplicate  # a resend of a moved message is still recognised
        assert resent[1].id is not None and resent[1].id > max(i or 0 for i in ids)
    finally:
        await main.dispose()
        await store_db.dispose()
