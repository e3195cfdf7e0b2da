"""Predictions are placed on partitions exactly as any Kafka client would place the key."""

from __future__ import annotations

import itertools

from kafka.partitioner.default import murmur2

from twinstream.streams.output import partition_for


def test_keyed_placement_matches_kafka_python() -> None:
    keys = [f"fd001-train-{i:03d}".encode() for i in range(1, 101)] + [b"pump-7", b"x" * 300]
    for partitions in (1, 4, 12):
        for key in keys:
            expected = (murmur2(key) & 0x7FFFFFFF) % partitions
            assert partition_for(key, partitions, itertools.count()) == expected


def test_unkeyed_messages_spread_round_robin() -> None:
    counter = itertools.count()
    assert [partition_for(None, 3, counter) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
