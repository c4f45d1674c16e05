"""Read the ``recommendations`` topic with aiokafka and print each recommendation.

    .venv/bin/python examples/consumer.py [--from-beginning] [--max N] [--timeout S]

Recommendations are plain JSON (docs/topics.md); dedupe by ``request_id`` if you need exactly one.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiokafka import AIOKafkaConsumer

from stream.settings import get_settings
from workers.kafka_clients import client_kwargs


async def consume(from_beginning: bool, max_messages: int, timeout_s: float) -> int:
    settings = get_settings()
    consumer = AIOKafkaConsumer(
        settings.topic("recommendations"),
        **client_kwargs(settings),
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    try:
        while seen < max_messages:
            batch = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_messages - seen)
            if not batch:
                break
            for messages in batch.values():
                for msg in messages:
                    rec = json.loads(msg.value)
                    seen += 1
                    flag = " (fallback)" if rec["fallback"] else ""
                    print(
                        f"{rec['request_id']} user={rec['user_id']} model={rec['model']['name']}"
                        f"/{rec['model']['version']}{flag} latency={rec['latency_ms']:.0f}ms"
                    )
                    for item in rec["items"]:
                        print(
                            f"  {item['rank']:>2}. {item['item_id']:>6}  {item['score']:+.3f}  {item['reason']}"
                        )
    finally:
        await consumer.stop()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--max", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    count = asyncio.run(consume(args.from_beginning, args.max, args.timeout))
    print(f"{count} recommendations")


if __name__ == "__main__":
    main()
