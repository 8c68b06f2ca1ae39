"""The faust app the worker runs: faust for the process (its timers, background tasks, start
and stop), no Kafka client of faust's own.

The stages consume through :class:`transcare.consuming.BatchConsumer` and publish through
:class:`transcare.kafka.KafkaPublisher`, so faust's consumer and producer would only join a
consumer group and hold connections for nothing (and its consumer, in a group of the same
name as a stage's, would break that group: its assignment protocol is not aiokafka's).
"""

from __future__ import annotations

import faust
from faust.app.base import BootStrategy


class _NoKafkaClients(BootStrategy):
    enable_kafka_consumer = False
    enable_kafka_producer = False


class StreamApp(faust.App):
    """``faust.App`` that starts no Kafka consumer or producer of faust's own."""

    BootStrategy = _NoKafkaClients
