"""The worker's faust app: consumers ask the broker to wait at most 100 ms for new records."""

from __future__ import annotations

from pathlib import Path

from transcare.settings import load_settings
from transcare.stream_app import FETCH_MAX_WAIT_MS, StreamApp


async def test_worker_consumers_use_the_short_fetch_wait(tmp_path: Path) -> None:
    from transcare.worker import create_app

    settings = load_settings({"TRANSCARE_DATA_DIR": str(tmp_path),
                              "TRANSCARE_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    app = create_app(settings)
    assert isinstance(app, StreamApp)
    thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
        assert consumer._group_id == settings.worker_group
    finally:
        await consumer.stop()
