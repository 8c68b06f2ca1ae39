"""The API's episode list (transitions/episode_queries.py) on SQLite and PostgreSQL: merged-away
episodes are left out before paging, and the order is the same on both databases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from transcare.db.database import Database
from transcare.db.tables import episodes
from transcare.db.upsert import insert_all
from transitions.episode import Episode
from transitions.episode_queries import find_episodes
from transitions.episode_store import episode_row

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _episode(n: int, admitted: datetime | None, merged_into: str = "") -> Episode:
    return Episode(id=f"ep-{n}", member_id="M1", patient_identifier="1001@GENHOSP",
                   facility_key="GENHOSP", facility="GENHOSP", kind="inpatient",
                   status="cancelled" if merged_into else "open", opened_by=f"e{n}",
                   admitted_at=admitted, merged_into=merged_into)


async def test_pages_never_repeat_an_episode_and_merged_ones_are_left_out(database: Database) -> None:
    made = [_episode(n, T0 - timedelta(days=n)) for n in range(1, 9)]
    made[1] = replace(made[1], merged_into="ep-1", status="cancelled")  # ep-2
    made[4] = replace(made[4], merged_into="ep-1", status="cancelled")  # ep-5
    made.append(_episode(9, None))  # not yet admitted: last
    await database.write(lambda c: insert_all(c, episodes, [episode_row(e, T0) for e in made]))

    listed = ["ep-1", "ep-3", "ep-4", "ep-6", "ep-7", "ep-8", "ep-9"]
    everything = await database.run(lambda c: find_episodes(c, member_id="M1"))
    assert [e.id for e in everything] == listed
    for size in (1, 2, 3):
        pages = [await database.run(lambda c, o=offset, n=size: find_episodes(
                     c, member_id="M1", limit=n, offset=o))
                 for offset in range(0, len(listed) + size, size)]
        assert [e.id for page in pages for e in page] == listed
        assert all(len(page) == size for page in pages[:len(listed) // size])
