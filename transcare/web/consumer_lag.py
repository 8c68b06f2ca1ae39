"""Consumer lag by stage, read from the broker: the records of each stage's input topic that
its consumer group has not yet handled (the partitions' end offsets minus the group's committed
offsets; from the beginning of a partition the group never committed).

The stages commit their offsets after a batch is handled (transcare/consuming.py), so the lag
counts records received but not yet handled, including a batch being handled now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from schemas.topics import ADT_EVENTS, ADT_RAW, EPISODES
from transcare.kafka import bootstrap_reachable

log = structlog.get_logger(__name__)

# Each stage's input topic (transcare/worker.py consumes these, one consumer group a stage).
STAGE_INPUTS: Mapping[str, str] = {"normaliser": ADT_RAW.name, "transitions": ADT_EVENTS.name,
                                   "followup": EPISODES.name}


class ConsumerLag:
    """Reads each stage's lag; a reading the broker cannot give is None (the clients are
    started again at the next reading)."""

    def __init__(self, bootstrap: str, group_of: Callable[[str], str],
                 timeout_ms: int = 3000, fetch_ms: int = 500,
                 inputs: Mapping[str, str] = STAGE_INPUTS) -> None:
        self._bootstrap, self._group_of, self._timeout_ms = bootstrap, group_of, timeout_ms
        self._inputs = inputs
        self._fetch_ms = fetch_ms
        self._failing = False
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def read(self) -> dict[str, int | None]:
        try:
            admin, consumer = await self._clients()
            lags = await self._read(admin, consumer)
            if self._failing:
                log.info("web.consumer_lag_available")
            self._failing = False
            return lags
        except Exception as exc:
            if not self._failing:  # once an outage, not every reading
                log.warning("web.consumer_lag_unavailable", error=type(exc).__name__)
            self._failing = True
            await self.close()
            return dict.fromkeys(self._inputs)

    async def _read(self, admin: AIOKafkaAdminClient,
                    consumer: AIOKafkaConsumer) -> dict[str, int | None]:
        # the partitions as the broker has them now (every topic's: asking for named ones
        # may create them on a broker that creates topics on demand)
        described = {t["topic"]: sorted(p["partition"] for p in t["partitions"])
                     for t in await admin.describe_topics() if not t["error_code"]}
        positions: dict[str, dict[TopicPartition, int]] = {}
        for stage, topic in self._inputs.items():
            tps = [TopicPartition(topic, p) for p in described.get(topic, ())]
            if not tps:
                continue  # the topic does not exist yet: nothing was ever sent
            committed = await admin.list_consumer_group_offsets(self._group_of(stage), partitions=tps)
            known = {tp: m.offset for tp, m in committed.items() if tp in tps and m.offset >= 0}
            missing = [tp for tp in tps if tp not in known]
            starts = await consumer.beginning_offsets(missing) if missing else {}
            positions[stage] = {tp: known.get(tp, starts.get(tp, 0)) for tp in tps}
        ends = await self._ends(consumer, {tp: o for p in positions.values() for tp, o in p.items()})
        return {stage: (sum(max(0, ends[tp] - o) for tp, o in positions[stage].items())
                        if stage in positions else None) for stage in self._inputs}

    async def _ends(self, consumer: AIOKafkaConsumer,
                    positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Each partition's high watermark, from a fetch at the group's position: every fetch
        answer carries it. (The embedded broker's answer to a list-offsets request counts
        record batches, not records; a fetch's is right on it and on Kafka.) A partition the
        fetch did not answer for takes the list-offsets answer."""
        if not positions:
            return {}
        consumer.assign(list(positions))
        try:
            for tp, offset in positions.items():
                consumer.seek(tp, offset)
            await consumer.getmany(timeout_ms=self._fetch_ms)
            ends = {tp: hw for tp in positions if (hw := consumer.highwater(tp)) is not None}
            unanswered = [tp for tp in positions if tp not in ends]
            if unanswered:
                ends.update(await consumer.end_offsets(unanswered))
            return ends
        finally:
            # assigned between readings, the consumer would fetch all the time and name the
            # topics to the broker, which recreates them (4 partitions) after a restart
            consumer.unsubscribe()

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            # aiokafka logs an ERROR line of its own for each bootstrap address it cannot
            # reach, at every start: while no broker answers that was a line every reading
            # (5 s). A plain connect first: no client is started until one address accepts.
            if not await bootstrap_reachable(self._bootstrap, self._timeout_ms / 1000):
                raise KafkaConnectionError("no bootstrap address accepts a connection")
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap,
                                        request_timeout_ms=self._timeout_ms)
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap,
                                        request_timeout_ms=self._timeout_ms,
                                        enable_auto_commit=False, fetch_max_wait_ms=50,
                                        max_partition_fetch_bytes=1)
            self._admin, self._consumer = admin, consumer
            await admin.start()
            await consumer.start()
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (consumer, admin):
            if client is not None:
                try:
                    await client.stop() if isinstance(client, AIOKafkaConsumer) else await client.close()
                except Exception:  # closing what is already broken
                    pass
