"""Table values written a while after they change, commits held below them (stream.writebehind)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import stream.app
from stream.writebehind import WriteBehind

TOPIC = "item-activity"
DELAY = 2.0


def event(partition: int, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=(TOPIC, partition), offset=offset))


def recorder() -> tuple[list[tuple[str, int, int]], WriteBehind[int]]:
    """(writes as (key, value, offset of the event written under), the write-behind)."""
    written: list[tuple[str, int, int]] = []
    return written, WriteBehind(lambda e, k, v: written.append((k, v, e.message.offset)), DELAY)


def test_a_value_is_written_once_its_first_change_is_delay_old_with_its_last_value() -> None:
    written, pending = recorder()
    pending.put("a", event(0, 10), 1, now=0.0)
    pending.put("b", event(0, 11), 1, now=0.5)
    pending.put("a", event(0, 12), 2, now=1.0)  # changed again: the write is still due at 2.0
    assert (pending.get("a"), pending.get("b"), pending.get("c"), len(pending)) == (2, 1, None, 2)
    assert pending.write_due(1.9, at_least=10, keep=10) == 0
    assert pending.write_due(2.0, at_least=10, keep=10) == 1
    assert written == [("a", 2, 12)]  # the last value, in the context of its last event
    assert pending.get("a") is None
    pending.put("a", event(0, 13), 3, now=2.1)  # a change after the write waits a whole delay again
    assert pending.write_due(4.0, at_least=10, keep=10) == 1 and written[-1] == ("b", 1, 11)
    assert pending.write_due(4.2, at_least=10, keep=10) == 1 and written[-1] == ("a", 3, 13)


def test_a_backlog_of_due_values_is_spread_over_the_calls_oldest_first() -> None:
    written, pending = recorder()
    for i in range(10):
        pending.put(f"k{i}", event(0, i), i, now=float(i) / 100)
    pending.put("late", event(0, 99), 0, now=1.0)  # not due at 2.5
    assert pending.write_due(2.5, at_least=3, keep=100) == 5  # 10 due, over 3: half of them
    assert [k for k, _, _ in written] == ["k0", "k1", "k2", "k3", "k4"]
    assert pending.write_due(2.5, at_least=3, keep=100) == 3  # 5 due: 3, more than half
    assert pending.write_due(2.5, at_least=3, keep=100) == 2  # the last 2 due: all of them
    assert pending.write_due(2.5, at_least=3, keep=100) == 0
    assert [k for k, _, _ in written][-1] == "k9" and pending.get("late") == 0


def test_past_keep_the_oldest_are_written_whatever_their_age() -> None:
    written, pending = recorder()
    for i in range(5):
        pending.put(f"k{i}", event(0, i), i, now=0.0)
    assert pending.write_due(0.0, at_least=0, keep=3) == 2
    assert [k for k, _, _ in written] == ["k0", "k1"]
    assert pending.flush() == 3 and len(pending) == 0


def test_the_floor_is_the_lowest_offset_of_a_partition_with_an_unwritten_change() -> None:
    _, pending = recorder()
    assert pending.floor((TOPIC, 0)) is None
    pending.put("a", event(0, 12), 1, now=0.0)
    pending.put("b", event(1, 40), 1, now=0.0)
    pending.put("c", event(0, 7), 1, now=0.5)  # fetched again after a seek: lower, and later
    pending.put("a", event(0, 20), 2, now=0.6)  # a's first unwritten change is still 12
    assert (pending.floor((TOPIC, 0)), pending.floor((TOPIC, 1))) == (7, 40)
    assert pending.write_due(2.2, at_least=10, keep=10) == 2  # a and b: c first changed at 0.5
    assert (pending.floor((TOPIC, 0)), pending.floor((TOPIC, 1))) == (7, None)
    assert pending.write_due(2.5, at_least=10, keep=10) == 1
    assert pending.floor((TOPIC, 0)) is None


def test_a_failed_write_leaves_it_pending_and_its_floor_held() -> None:
    def write(_: Any, key: str, value: int) -> None:
        raise OSError("No space left on device")

    pending: WriteBehind[int] = WriteBehind(write, DELAY)
    pending.put("a", event(0, 5), 1, now=0.0)
    with pytest.raises(OSError):
        pending.flush()
    assert pending.get("a") == 1 and pending.floor((TOPIC, 0)) == 5


def test_drop_forgets_the_values_first_changed_in_the_revoked_partitions() -> None:
    written, pending = recorder()
    pending.put("a", event(0, 1), 1, now=0.0)
    pending.put("b", event(1, 1), 1, now=0.0)
    pending.put("c", event(0, 2), 1, now=0.0)
    assert pending.drop({(TOPIC, 0), ("other", 1)}) == 2
    assert (pending.get("a"), pending.get("b"), pending.get("c")) == (None, 1, None)
    assert pending.floor((TOPIC, 0)) is None and pending.floor((TOPIC, 1)) == 1
    assert pending.flush() == 1 and written == [("b", 1, 1)]


def test_a_key_changed_from_two_partitions_is_refused() -> None:
    # Its floor would guard only the first: a commit could then pass the other's change.
    _, pending = recorder()
    pending.put("a", event(0, 1), 1, now=0.0)
    with pytest.raises(ValueError, match="changed under"):
        pending.put("a", event(1, 1), 2, now=0.1)


def test_the_app_holds_commits_below_the_lowest_floor_of_its_write_behinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, first = recorder()
    _, second = recorder()
    first.put("a", event(0, 30), 1, now=0.0)
    second.put("b", event(0, 12), 1, now=0.0)
    app = stream.app.app
    monkeypatch.setattr(app, "write_behind", [first, second])
    assert (app.commit_floor((TOPIC, 0)), app.commit_floor((TOPIC, 1))) == (12, None)
