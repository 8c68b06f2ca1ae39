"""The listener and the worker as processes on PostgreSQL (the production database).

Runs when TRANSCARE_TEST_POSTGRES_URL names a server (``.ci/run`` sets it on this machine);
elsewhere it reports that it did not run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from adt_listener.client import MllpClient
from tests.conftest import Service, make_service
from transcare.broker import EmbeddedBroker


@pytest.fixture
def pg_service(tmp_path: Path, broker: EmbeddedBroker, empty_postgres_url: str) -> Iterator[Service]:
    svc = make_service(tmp_path, broker.bootstrap, TRANSCARE_DATABASE_URL=empty_postgres_url)
    svc.start("worker")
    svc.start("listener")
    yield svc
    svc.stop_all()


async def _statuses(url: str, prefix: str) -> dict[str, str]:
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql")
                                 .render_as_string(hide_password=False))
    try:
        rows = await conn.fetch("SELECT control_id, status FROM messages "
                                "WHERE control_id LIKE $1", prefix + "%")
        return {r["control_id"]: r["status"] for r in rows}
    finally:
        await conn.close()


async def test_messages_are_stored_once_and_processed_on_postgresql(
        pg_service: Service, empty_postgres_url: str) -> None:
    import asyncio

    template = (Path(__file__).parent / "data" / "a04.hl7").read_bytes()
    client = await MllpClient.connect("127.0.0.1", pg_service.mllp_port)
    codes = []
    for n in range(40):
        message = template.replace(b"CONTROLID", f"PG-{n:03d}".encode()).replace(
            b"PATIENTID", f"Q{n % 5}".encode())
        codes.append((await client.send(message))[0].code)
    resend = template.replace(b"CONTROLID", b"PG-000").replace(b"PATIENTID", b"Q0")
    assert (await client.send(resend))[0].code == "AA"
    await client.close()
    assert codes == ["AA"] * 40
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        statuses = await _statuses(empty_postgres_url, "PG-")
        if len(statuses) == 40 and set(statuses.values()) == {"processed"}:
            break
        assert asyncio.get_running_loop().time() < deadline, f"not processed: {statuses}"
        await asyncio.sleep(0.5)
