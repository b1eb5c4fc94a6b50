"""schemas.runtime.cassandra.driver_errors: the one tuple of cassandra-driver failures that the
gap store, the stream processor's sinks and the GBM store catch."""

from __future__ import annotations

import pytest
from cassandra import OperationTimedOut, ReadTimeout, Unavailable
from cassandra.cluster import NoHostAvailable

from schemas.runtime.cassandra import driver_errors


@pytest.mark.parametrize(
    "error",
    [
        NoHostAvailable("Unable to connect to any servers", {"127.0.0.1:9042": OSError("refused")}),
        OperationTimedOut("timed out"),
        ReadTimeout("read timeout"),
        Unavailable("not enough replicas"),
    ],
)
def test_every_driver_failure_is_caught(error: Exception) -> None:
    assert isinstance(error, driver_errors())


def test_a_bug_of_ours_is_not_a_driver_failure() -> None:
    assert not isinstance(ValueError("bad value"), driver_errors())
    assert not isinstance(OSError("socket"), driver_errors())  # the gap store adds it itself
