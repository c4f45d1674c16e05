"""The Faust tables (RocksDB + changelog). Values are JSON dicts, always reassigned, never mutated."""

from __future__ import annotations

from typing import Any

from stream.app import app, settings


def _table(name: str) -> Any:
    """A partitioned table with bounded RocksDB memory (ignored by the memory store)."""
    mb = 1024 * 1024
    options = {
        "write_buffer_size": settings.rocksdb_write_buffer_mb * mb,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.rocksdb_block_cache_mb * mb,
        "block_cache_compressed_size": settings.rocksdb_block_cache_mb * mb,
    }
    return app.Table(name, default=None, key_type=str, options=options)


# Per-user profile, partitioned like ``events`` and ``queries`` (key: user_id).
profiles = _table("profiles")

# Erasure markers (key: user_id): only the events offset and time of the erasure, so that
# redelivered or late events from before it cannot rebuild the deleted profile.
erasures = _table("erasures")

# The catalog, its embeddings, and item statistics: one writer per item (the owner of the item's
# partition of ``items`` / ``item-activity``). Every worker reads all of them through their
# changelogs (stream/follower.py).
items = _table("items")
item_vectors = _table("item-vectors")
item_stats = _table("item-stats")

# The feedback join's state per user (stream/feedback.py): open impressions and their outcomes so
# far, partitioned like ``events`` and ``queries`` (key: user_id).
feedback = _table("feedback")
# What training needs of each open impression (key: request_id), written under the user's
# partition when it opens and deleted when its window closes (stream.feedback.payload).
open_impressions = _table("open-impressions")
