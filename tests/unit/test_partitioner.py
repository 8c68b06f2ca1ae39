"""The publisher's partitioner: the partitions of aiokafka's (and the Java client's) default
partitioner, so every producer of a topic puts one patient's records in one partition."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from transcare.kafka import partition_for


@pytest.mark.parametrize("count", [1, 2, 3, 8, 12, 64])
def test_the_same_partition_as_the_default_partitioner(count: int) -> None:
    rng = random.Random(count)
    partitions = list(range(count))
    keys = [b"", b"x", b"HH-0001|GENHOSP", "Ünïcode|Å".encode()]
    keys += [rng.randbytes(rng.randint(1, 40)) for _ in range(2000)]
    for key in keys + keys:  # the second time from the kept hashes
        assert partition_for(key, partitions, partitions) == \
            DefaultPartitioner()(key, partitions, partitions), key


def test_a_bytearray_key_goes_where_its_bytes_go() -> None:
    partitions = list(range(8))
    for key in (b"HH-0001", b"x" * 40):
        assert partition_for(bytearray(key), partitions, partitions) == \
            DefaultPartitioner()(bytearray(key), partitions, partitions)


def test_partition_ids_are_taken_from_the_list_given() -> None:
    partitions = [3, 5, 9]
    assert {partition_for(str(i).encode(), partitions, partitions)
            for i in range(200)} == {3, 5, 9}


def test_no_key_goes_to_an_available_partition() -> None:
    assert {partition_for(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert partition_for(None, [0, 1, 2], []) in {0, 1, 2}
