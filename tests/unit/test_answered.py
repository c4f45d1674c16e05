"""The memory of answered (and being answered) request ids."""

from __future__ import annotations

from stream.answered import AnsweredRequests


def test_an_answered_id_is_not_claimed_again() -> None:
    answered = AnsweredRequests()
    assert answered.claim("r1")
    answered.settle("r1", answered=True)
    assert not answered.claim("r1")
    assert answered.claim("r2")


def test_an_id_being_answered_is_not_claimed_twice() -> None:
    # Two batches in flight may hold the same id before either has answered.
    answered = AnsweredRequests()
    assert answered.claim("r1")
    assert not answered.claim("r1")


def test_an_unanswered_claim_is_released() -> None:
    # Dead-lettered on an internal error: a re-send is tried again.
    answered = AnsweredRequests()
    assert answered.claim("r1")
    answered.settle("r1", answered=False)
    assert "r1" not in answered
    assert answered.claim("r1")


def test_forgets_the_oldest_beyond_capacity() -> None:
    answered = AnsweredRequests(capacity=2)
    for rid in ("a", "b", "c"):
        assert answered.claim(rid)
        answered.settle(rid, answered=True)
    assert len(answered) == 2
    assert "a" not in answered  # answered again if handed over again: a duplicate, never a loss
    assert "b" in answered and "c" in answered


def test_forget_stands_for_a_restart() -> None:
    answered = AnsweredRequests()
    answered.claim("a")
    answered.settle("a", answered=True)
    answered.claim("b")
    answered.forget()
    assert answered.claim("a") and answered.claim("b")
