"""Every topic streamrec reads or writes, with explicit partition counts and configs.

Topics are raw bytes: payloads are plain JSON (docs/topics.md), parsed by ``stream.records.parse``
inside the agents so that bad input is dead-lettered instead of killing the agent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from stream.settings import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: dict[str, str]
    partitions: int | None = None  # None: settings.topic_partitions
    consumed: bool = False  # read by the workers' consumer group (an agent's input)


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("items", {"cleanup.policy": "compact"}, consumed=True),
    TopicSpec("events", {"retention.ms": str(7 * DAY_MS)}, consumed=True),
    TopicSpec("queries", {"retention.ms": str(7 * DAY_MS)}, consumed=True),
    TopicSpec("recommendations", {"retention.ms": str(7 * DAY_MS)}),
    TopicSpec("dead-letters", {"retention.ms": str(30 * DAY_MS)}),
    TopicSpec("user-erasure", {"retention.ms": str(30 * DAY_MS)}, consumed=True),
    TopicSpec("user-erasure-confirmations", {"retention.ms": str(30 * DAY_MS)}),
    TopicSpec("item-activity", {"retention.ms": str(1 * DAY_MS)}, consumed=True),
    # The learning loop (docs/learning-loop.md): keyed by user_id like events, so the join is local.
    TopicSpec("impressions", {"retention.ms": str(7 * DAY_MS)}),
    TopicSpec("training-examples", {"retention.ms": str(30 * DAY_MS)}),
    # The model registry: one partition, compacted, read in full by every worker.
    TopicSpec("model-versions", {"cleanup.policy": "compact"}, partitions=1),
)


# The tables (stream/tables.py): their changelog topics are created with the input topics, before
# Faust starts. Left to Faust, a changelog created at start-up could be seen by the consumer's first
# metadata with 0 partitions, and the first write to its table failed with PartitionsMismatch.
TABLES: tuple[str, ...] = (
    "profiles",
    "erasures",
    "items",
    "item-vectors",
    "item-stats",
    "feedback",
    "open-impressions",
)


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition the producers' default partitioner (aiokafka's, Kafka's murmur2) gives ``key``.

    Memoised: item activity asks it for ~20 items an event on each side of its topic, and aiokafka's
    murmur2 is pure Python (~1.7 us a call, ~2.8 with the import below; a hit is ~0.1)."""
    # Imported here: the model environment imports stream.itemstats (and so this module) without aiokafka.
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def topic_names(settings: Settings) -> dict[str, str]:
    return {spec.name: settings.topic(spec.name) for spec in TOPIC_SPECS}
