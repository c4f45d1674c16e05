"""Every table's changelog topic is created up front with the right name (workers/kafka_clients.py)."""

from __future__ import annotations

from stream import tables
from stream.app import app, settings
from stream.topics import TABLES, changelog_topic


def test_the_changelogs_created_up_front_are_exactly_the_apps_tables() -> None:
    assert tables.feedback is not None  # importing the module declares the tables on the app
    assert set(app.tables.keys()) == set(TABLES)
    for name, table in app.tables.items():
        assert table.changelog_topic.get_topic_name() == changelog_topic(settings, name)
