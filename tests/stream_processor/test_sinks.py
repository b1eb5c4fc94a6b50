"""Retry policy of the micro-batch sinks (no Spark needed)."""

from __future__ import annotations

import logging

import pytest
from py4j.protocol import Py4JError

from stream_processor.exceptions import CassandraSinkError, SinkError
from stream_processor.sinks import retry_write


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def test_retries_with_capped_backoff_then_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    attempts = []

    def failing() -> None:
        attempts.append(clock.now)
        raise Py4JError("NoHostAvailableException: all hosts tried")

    with pytest.raises(CassandraSinkError, match=r"batch 3: writing to cassandra ks.t failed"):
        retry_write(
            failing,
            what="cassandra ks.t",
            batch_id=3,
            timeout_ms=60_000,
            error=CassandraSinkError,
            sleep=clock.sleep,
            clock=clock,
        )
    assert clock.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert max(clock.sleeps) == 10.0
    assert sum(clock.sleeps) <= 60.0
    assert len(attempts) == len(clock.sleeps) + 1
    assert any(r.levelno == logging.ERROR and "giving up" in r.getMessage() for r in caplog.records)


def test_success_after_failures_returns_attempts() -> None:
    clock = FakeClock()
    outcomes = [Py4JError("timeout"), Py4JError("timeout"), None]

    def flaky() -> None:
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome

    assert (
        retry_write(
            flaky,
            what="x",
            batch_id=1,
            timeout_ms=10_000,
            error=SinkError,
            sleep=clock.sleep,
            clock=clock,
        )
        == 3
    )


def test_python_errors_are_not_retried() -> None:
    calls = []

    def buggy() -> None:
        calls.append(1)
        raise KeyError("column")

    with pytest.raises(KeyError):
        retry_write(
            buggy, what="x", batch_id=1, timeout_ms=10_000, error=SinkError, sleep=lambda s: None
        )
    assert calls == [1]
