"""The relay publishes the backlog after the broker comes back, and nothing is lost.

The embedded broker keeps records in memory only, so a restart loses what it held: published
but unprocessed messages are republished by the relay's sweep (``TRANSCARE_REPUBLISH_AFTER``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from adt_listener.client import MllpClient
from tests.conftest import Service, make_service
from tests.integration.helpers import store_rows, wait_until_settled
from transcare.broker import EmbeddedBroker, free_port


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(free_port(), tmp_path / "own-broker.log")
    broker.start()
    yield broker
    broker.stop()


async def _send(port: int, prefix: str, count: int) -> list[str]:
    template = (Path(__file__).parent / "data" / "a04.hl7").read_bytes()
    client = await MllpClient.connect("127.0.0.1", port, timeout=10)
    codes = []
    for n in range(count):
        message = template.replace(b"CONTROLID", f"{prefix}-{n:04d}".encode()).replace(
            b"PATIENTID", f"R{n % 7}".encode())
        codes.append((await client.send(message))[0].code)
    await client.close()
    return codes


async def test_backlog_is_published_after_broker_restart(
        tmp_path: Path, own_broker: EmbeddedBroker) -> None:
    (tmp_path / "svc").mkdir()
    svc: Service = make_service(tmp_path / "svc", own_broker.bootstrap,
                                TRANSCARE_REPUBLISH_AFTER="4")
    svc.start("worker")
    svc.start("listener")
    db = svc.message_store
    try:
        assert await _send(svc.mllp_port, "BEFORE", 20) == ["AA"] * 20
        await wait_until_settled(db)
        own_broker.stop()
        # The broker is down: the listener still stores and acknowledges.
        assert await _send(svc.mllp_port, "DOWN", 30) == ["AA"] * 30
        await asyncio.sleep(1.0)
        assert len(store_rows(db, "published_at IS NULL AND status = 'accepted'")) == 30
        # As `transcare up` does: the embedded broker comes back empty, and the worker is
        # restarted with it so that it rejoins the new consumer group from the start.
        svc.stop("worker")
        own_broker.start()
        svc.start("worker")
        await wait_until_settled(db, timeout_s=120)
        rows = store_rows(db, "control_id LIKE 'DOWN-%'")
        assert len(rows) == 30 and {r["status"] for r in rows} == {"processed"}
    finally:
        svc.stop_all()
