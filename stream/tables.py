"""The Faust tables (RocksDB + changelog). Values are JSON dicts, always reassigned, never mutated."""

from __future__ import annotations

from stream.app import app

# Per-user profile, partitioned like ``events`` and ``queries`` (key: user_id).
profiles = app.Table("profiles", default=None, key_type=str)

# Erasure markers (key: user_id): only the events offset and time of the erasure, so that
# redelivered or late events from before it cannot rebuild the deleted profile.
erasures = app.Table("erasures", default=None, key_type=str)

# The catalog, its embeddings, and item statistics: one writer per item (the owner of the item's
# partition of ``items`` / ``item-activity``). Every worker reads all of them through their
# changelogs (stream/follower.py).
items = app.Table("items", default=None, key_type=str)
item_vectors = app.Table("item-vectors", default=None, key_type=str)
item_stats = app.Table("item-stats", default=None, key_type=str)

# The feedback join's state per user (stream/feedback.py): open impressions and their outcomes so
# far, partitioned like ``events`` and ``queries`` (key: user_id).
feedback = app.Table("feedback", default=None, key_type=str)
