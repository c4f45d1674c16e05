"""The Faust tables (RocksDB + changelog). Values are JSON dicts, always reassigned, never mutated."""

from __future__ import annotations

from stream.app import app

# Per-user profile, partitioned like ``events`` and ``queries`` (key: user_id).
profiles = app.Table("profiles", default=None, key_type=str)

# Erasure markers (key: user_id): only the events offset and time of the erasure, so that
# redelivered or late events from before it cannot rebuild the deleted profile.
erasures = app.Table("erasures", default=None, key_type=str)

# The catalog and its embeddings: every worker needs all of it to generate candidates.
items = app.GlobalTable("items", default=None, key_type=str)
item_vectors = app.GlobalTable("item-vectors", default=None, key_type=str)

# Co-visitation, co-occurrence and windowed counts per item, written by the ``item-activity`` agent.
item_stats = app.GlobalTable("item-stats", default=None, key_type=str)
