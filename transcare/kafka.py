"""Kafka adapters on aiokafka: the publisher and topic creation."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import collect_hosts
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from adt_listener.relay import RecordTooLarge

log = structlog.get_logger("transcare.kafka")


async def bootstrap_reachable(bootstrap: str, timeout_s: float) -> bool:
    """Whether one of the bootstrap addresses (``host:port``, ``[v6]:port``, comma-separated,
    as aiokafka reads them) accepts a TCP connection: a check that starts no Kafka client, and
    so logs nothing (an aiokafka client logs an ERROR line for each address it cannot reach)."""
    try:
        hosts = collect_hosts(bootstrap, randomize=False)
    except ValueError:
        return False
    for host, port, _ in hosts:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # comes as the connect fails, and the caller's loop (the web's sampler) then never
            # stops (a test's teardown hung on it)
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            continue
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return True
    return False


@functools.lru_cache(maxsize=1 << 16)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes | None, all_partitions: Sequence[int],
                  available: Sequence[int]) -> int:
    """aiokafka's (and the Java client's) default partitioner, murmur2 of the key, with the
    hashes of recent keys kept: aiokafka's murmur2 is pure Python, about 7 us a key, and every
    record of the pipeline is keyed by a patient whose next messages follow soon. The same
    partition as ``DefaultPartitioner`` for every key (a test compares them)."""
    if key is None:
        return random.choice(available or all_partitions)
    # bytes(...) for a bytearray or memoryview key, which the cache cannot hash
    return all_partitions[_key_hash(key if type(key) is bytes else bytes(key))
                          % len(all_partitions)]


class KafkaPublisher:
    """Publishes keyed records with acks=all; idempotence only against a real cluster.

    Arguments:
        bootstrap: ``host:port[,host:port]``.
        idempotent: enable the idempotent producer (the embedded broker rejects it).
    """

    def __init__(self, bootstrap: str, idempotent: bool = False) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent,
            linger_ms=2, max_batch_size=256 * 1024, request_timeout_ms=15000,
            max_request_size=4 * 1024 * 1024, partitioner=partition_for,
        )

    async def start(self) -> KafkaPublisher:
        await self._producer.start()
        return self

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Send records, keyed, and wait until the broker acknowledged all of them.

        Records are grouped by partition (the producer's own key partitioner, so keys land where
        ``send`` would put them) into record batches: one future per batch, not per record.
        Order within a partition is the order of ``records``.
        """
        try:
            await self._send(topic, records)
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            raise RecordTooLarge(str(exc)) from exc

    async def _send(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        partitions = sorted(await self._producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in records:
            p = partition_for(key, partitions, partitions)
            by_partition.setdefault(p, []).append((key, value))
        futures = []
        for partition, items in by_partition.items():
            batch = self._producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self._producer.send_batch(batch, topic,
                                                                   partition=partition))
                    batch = self._producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def close(self) -> None:
        await self._producer.stop()


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create the topics if missing (keyed by patient, ``partitions`` each)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            log.info("kafka.topics_created", topics=[t.name for t in missing])
    finally:
        await admin.close()


async def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Wait until the broker answers metadata requests, or raise TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"Kafka broker at {bootstrap} not reachable") from None
            await asyncio.sleep(0.3)
        finally:
            try:
                await admin.close()
            except Exception:
                pass
