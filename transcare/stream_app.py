"""The faust app the worker runs: faust's Kafka transport with a short fetch wait.

faust creates its consumer with ``fetch_max_wait_ms=1500`` and no setting to change it. A
broker holds a fetch up to that long when it has nothing new at the moment of the request;
the embedded broker does so even when records arrive meanwhile, so every stage of the
pipeline added up to 1.5 s (stage lags p50 of 0.7-0.8 s at any load). Measured with
``bench/e2e`` (normaliser split off) at 500 msg/s, processing lag p99: 2.6 s with 1,500 ms;
1.4-3.6 s with 50 ms; 2.2 s with 100 ms, with less broker CPU (24-32% of a core against
27-35%). A real Kafka cluster answers as soon as data arrives either way; the shorter wait
only makes idle consumers ask more often.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver

FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class StreamApp(faust.App):
    """``faust.App`` whose consumers use :data:`FETCH_MAX_WAIT_MS`."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
