"""Consumer lag by stage (transcare/web/consumer_lag.py) against the real embedded broker: the
records a stage's group has not handled, from the beginning where it never committed; None for
every stage when no broker answers."""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.conftest import free_port
from tests.integration.test_batch_consumer import feed, publish
from transcare.kafka import bootstrap_reachable
from transcare.web.consumer_lag import STAGE_INPUTS, ConsumerLag


async def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "")
                               for p, o in offsets.items()})
    finally:
        await consumer.stop()


async def test_each_stages_lag_is_what_its_group_has_not_committed(broker) -> None:  # noqa: ANN001
    prefix = f"lag-{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.events"  # a topic of its own: the session's broker is shared
    await publish(broker.bootstrap, topic, feed(40))  # 4 partitions
    first, ends = await _offsets(broker.bootstrap, topic)  # what the topic holds, read
    lag = ConsumerLag(broker.bootstrap, lambda stage: f"{prefix}-{stage}",
                      inputs={**STAGE_INPUTS, "transitions": topic})
    try:
        before = await lag.read()
        assert before["transitions"] == sum(ends[p] - first[p] for p in ends) == 40
        # the group handled partition 0 up to its end, and 5 records of partition 1
        await _commit(broker.bootstrap, f"{prefix}-transitions", topic,
                      {0: ends[0], 1: first[1] + 5})
        after = await lag.read()
        assert after["transitions"] == before["transitions"] - (ends[0] - first[0]) - 5
    finally:
        await lag.close()


async def test_no_broker_no_figures(broker) -> None:  # noqa: ANN001
    lag = ConsumerLag(f"127.0.0.1:{free_port()}", lambda stage: stage, timeout_ms=500)
    try:
        assert await lag.read() == dict.fromkeys(STAGE_INPUTS)
    finally:
        await lag.close()


async def test_no_broker_no_client_error_lines(caplog) -> None:  # noqa: ANN001
    """Regression: while no broker answered, each reading (every 5 s in the web) started the
    clients again and aiokafka logged an ERROR line of its own for the unreachable address;
    the reader's own warning is once an outage."""
    lag = ConsumerLag(f"127.0.0.1:{free_port()}", lambda stage: stage, timeout_ms=500)
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                assert await lag.read() == dict.fromkeys(STAGE_INPUTS)
        noisy = [r.getMessage() for r in caplog.records
                 if r.name.startswith("aiokafka") and r.levelno >= logging.WARNING]
        assert noisy == []
    finally:
        await lag.close()


async def _offsets(bootstrap: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """Each partition's first offset and end (its high watermark), by reading it all."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        first = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
        ends: dict[int, int] = {}
        while True:
            await consumer.getmany(timeout_ms=200)
            ends = {tp.partition: hw for tp in tps if (hw := consumer.highwater(tp)) is not None}
            positions = {tp.partition: await consumer.position(tp) for tp in tps}
            if len(ends) == len(tps) and all(positions[p] >= ends[p] for p in ends):
                return first, ends
    finally:
        await consumer.stop()


async def test_the_reader_fetches_nothing_between_readings(broker, monkeypatch) -> None:  # noqa: ANN001
    """Regression (review): the reader's consumer stayed assigned to the stage topics after a
    reading: it fetched about 20 times a second, and named the topics to a restarted embedded
    broker, which created them again with its own partition count."""
    from aiokafka.consumer import fetcher

    topic = f"lag-{uuid.uuid4().hex[:8]}.idle"
    await publish(broker.bootstrap, topic, feed(8))
    fetches = 0
    original = fetcher.Fetcher._proc_fetch_request

    async def counting(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        nonlocal fetches
        fetches += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(fetcher.Fetcher, "_proc_fetch_request", counting)
    lag = ConsumerLag(broker.bootstrap, lambda stage: f"{topic}-{stage}",
                      inputs={"transitions": topic})
    try:
        assert (await lag.read())["transitions"] == 8
        before = fetches
        await asyncio.sleep(2)  # the sampler's pause
        assert fetches == before, f"{fetches - before} fetch requests while idle"
    finally:
        await lag.close()


async def test_bootstrap_reachable_reads_addresses_as_aiokafka_does() -> None:
    """The plain connect the lag reader and /readyz make before any Kafka client: the first
    address that accepts a connection answers; ``[v6]:port`` is read as aiokafka reads it (the
    readiness check split it at the last colon and tried to connect to ``[::1]``)."""
    v4 = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    v4_port = v4.sockets[0].getsockname()[1]
    closed = free_port()
    try:
        assert await bootstrap_reachable(f"127.0.0.1:{v4_port}", 1.0)
        assert await bootstrap_reachable(f"127.0.0.1:{closed}, 127.0.0.1:{v4_port}", 1.0)
        assert not await bootstrap_reachable(f"127.0.0.1:{closed}", 1.0)
        assert not await bootstrap_reachable("127.0.0.1:not-a-port", 1.0)
        v6 = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
        try:
            assert await bootstrap_reachable(f"[::1]:{v6.sockets[0].getsockname()[1]}", 1.0)
        finally:
            v6.close()
    finally:
        v4.close()


async def test_the_web_stops_while_no_broker_answers(tmp_path) -> None:  # noqa: ANN001
    """Regression: the web's sampler reads the lag every 5 s; with the reader's connect under
    ``asyncio.wait_for``, a shutdown whose cancel came as the connect failed was swallowed
    (Python 3.11) and the sampler went on, so the web's shutdown never finished (a test's
    teardown hung). Each start and stop here must finish."""
    import random

    from tests.integration.helpers import migrate
    from transcare.settings import Settings
    from transcare.web.app import create_app

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}",
                        kafka_bootstrap=f"127.0.0.1:{free_port()}")
    await migrate(settings)
    rng = random.Random(7)
    for _ in range(30):
        app = create_app(settings)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        await asyncio.sleep(rng.uniform(0, 0.01))  # stop while a reading connects
        async with asyncio.timeout(20):
            await context.__aexit__(None, None, None)
