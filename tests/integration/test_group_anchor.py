"""Every input partition has a committed offset for the workers' group from the start (real broker):
a partition taken over before its first owner committed is read from its beginning, not its end."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.settings import Settings
from stream.topics import TOPIC_SPECS
from workers.kafka_clients import anchor_group_offsets, client_kwargs, ensure_topics, input_partitions


async def committed_offsets(
    settings: Settings, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=settings.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def test_new_input_partitions_start_the_group_at_offset_0(isolated: Settings) -> None:
    asyncio.run(ensure_topics(isolated))
    tps = input_partitions(isolated)
    assert {s.name for s in TOPIC_SPECS if s.consumed} == {
        "items",
        "events",
        "queries",
        "user-erasure",
        "item-activity",
    }
    assert asyncio.run(committed_offsets(isolated, tps)) == dict.fromkeys(tps, 0)
    # Outputs are not the group's to commit.
    out = [TopicPartition(isolated.topic("recommendations"), 0)]
    assert asyncio.run(committed_offsets(isolated, out)) == {out[0]: None}
    assert asyncio.run(anchor_group_offsets(isolated)) == []  # nothing left to anchor


async def create_inputs_without_offsets(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(settings.topic(s.name), s.partitions or settings.topic_partitions, 1)
                for s in TOPIC_SPECS
                if s.consumed
            ]
        )
    finally:
        await admin.close()


def test_a_live_group_is_left_to_its_members(isolated: Settings) -> None:
    asyncio.run(create_inputs_without_offsets(isolated))
    queries = TopicPartition(isolated.topic("queries"), 0)
    events = TopicPartition(isolated.topic("events"), 0)

    async def scenario() -> tuple[list[TopicPartition], int | None, int | None]:
        member = AIOKafkaConsumer(
            isolated.topic("queries"),
            **client_kwargs(isolated),
            group_id=isolated.app_id,
            enable_auto_commit=False,
        )
        await member.start()
        try:
            await member.getmany(timeout_ms=3000)  # joined: the group has a member now
            await member.commit({queries: 5})
            # A partition with no commit while the group is live: the anchor leaves it alone.
            anchored = await anchor_group_offsets(isolated)
            return anchored, await member.committed(queries), await member.committed(events)
        finally:
            await member.stop()

    anchored, queries_committed, events_committed = asyncio.run(scenario())
    assert anchored == []
    assert queries_committed == 5
    assert events_committed is None
