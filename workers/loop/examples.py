"""Reading the learning loop's inputs from Kafka (app env): the ``training-examples`` topic deduped by
key, and the item texts the ranker read (the ``items`` topic), into one JSONL for the model env.

Both topics are read from the beginning to the end offsets seen at the start, without a consumer
group: a retrain is a batch job over what exists now and must not move anyone's offsets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.records import InvalidMessage, Item, TrainingExample, parse
from stream.settings import Settings
from stream.text import item_text
from workers.kafka_clients import client_kwargs

Message = tuple[bytes | None, bytes | None]  # (key, value)


class TopicReadError(RuntimeError):
    pass


async def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Message]:
    """Every (key, value) in ``topic`` up to its end offsets at the time of the call."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # a topic not in the first metadata fetch
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                return out
            if time.monotonic() > deadline:
                raise TopicReadError(f"{topic}: end offsets not reached within {timeout_s}s")
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                out.extend((m.key, m.value) for m in messages)
    finally:
        await consumer.stop()


@dataclass
class Deduped:
    examples: list[TrainingExample]
    duplicates: int = 0
    invalid: int = 0


def dedupe(messages: Iterable[Message]) -> Deduped:
    """One example per ``request_id:item_id`` (the last one read): a worker that crashed between
    writing examples and committing its offsets writes them again."""
    by_key: dict[str, TrainingExample] = {}
    out = Deduped(examples=[])
    for _key, value in messages:
        try:
            example = parse(TrainingExample, value)
        except InvalidMessage:
            out.invalid += 1
            continue
        if example.key in by_key:
            out.duplicates += 1
        by_key[example.key] = example
    out.examples = list(by_key.values())
    return out


def item_texts(messages: Iterable[Message]) -> dict[str, str]:
    """item_id -> ``stream.text.item_text`` of its latest version (a tombstone removes it)."""
    texts: dict[str, str] = {}
    for key, value in messages:
        if value is None:
            if key is not None:
                texts.pop(key.decode("utf-8", errors="replace"), None)
            continue
        try:
            item = parse(Item, value)
        except InvalidMessage:
            continue
        texts[item.item_id] = item_text(item)
    return texts


@dataclass
class Collected:
    path: Path
    rows: int
    requests: int
    positive_groups: int
    duplicates: int
    invalid: int
    missing_items: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)


def row(example: TrainingExample, text: str) -> dict[str, object]:
    return {
        "key": example.key,
        "request_id": example.request_id,
        "item_id": example.item_id,
        "rank": example.rank,
        "shown_at": example.shown_at,
        "label": example.label,
        "propensity": example.propensity,
        "features": example.features,
        "context": example.context,
        "item_text": text,
    }


def write_rows(path: Path, examples: Iterable[TrainingExample], texts: dict[str, str]) -> tuple[int, int]:
    """JSONL of the examples whose item text is known; (rows written, examples without a text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = missing = 0
    with path.open("w", encoding="utf-8") as fh:
        for example in examples:
            text = texts.get(example.item_id)
            if text is None:  # the cosine cannot be recomputed without the text the ranker read
                missing += 1
                continue
            fh.write(json.dumps(row(example, text)) + "\n")
            written += 1
    return written, missing


def positive_groups(examples: Iterable[TrainingExample]) -> tuple[int, int]:
    """(requests, requests with at least one positive and one shown-not-clicked item)."""
    labels: dict[str, set[int]] = {}
    for e in examples:
        labels.setdefault(e.request_id, set()).add(1 if e.label >= 1 else 0)
    return len(labels), sum(1 for s in labels.values() if s == {0, 1})


def collect(settings: Settings, path: Path) -> Collected:
    started = time.perf_counter()

    async def both() -> tuple[list[Message], list[Message]]:
        examples = await read_topic(settings, settings.topic("training-examples"))
        items = await read_topic(settings, settings.topic("items"))
        return examples, items

    raw_examples, raw_items = asyncio.run(both())
    deduped = dedupe(raw_examples)
    texts = item_texts(raw_items)
    kept = [e for e in deduped.examples if e.item_id in texts]
    rows, missing = write_rows(path, kept, texts)
    requests, positive = positive_groups(kept)
    return Collected(
        path=path,
        rows=rows,
        requests=requests,
        positive_groups=positive,
        duplicates=deduped.duplicates,
        invalid=deduped.invalid,
        missing_items=len(deduped.examples) - len(kept) + missing,
        seconds=round(time.perf_counter() - started, 2),
        counts={"messages": len(raw_examples), "items": len(texts)},
    )
