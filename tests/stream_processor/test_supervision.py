"""The stall watch of the job supervisor (fake queries, no Spark)."""

from __future__ import annotations

from typing import Any

import pytest

from stream_processor.config import StreamSettings
from stream_processor.exceptions import ConfigError
from stream_processor.jobs.pipeline import _StallWatch, checkpoint_conf


class FakeQuery:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {"isTriggerActive": False}
        self.lastProgress: dict[str, Any] | None = None


def test_a_batch_running_past_the_timeout_is_stalled() -> None:
    watch, q = _StallWatch(timeout_s=100), FakeQuery()
    q.status["isTriggerActive"] = True
    q.lastProgress = {"batchId": 4}
    assert not watch.stalled("raw", q, now=0)
    assert not watch.stalled("raw", q, now=100)
    assert watch.stalled("raw", q, now=100.5)


def test_progress_or_idleness_resets_the_clock() -> None:
    watch, q = _StallWatch(timeout_s=100), FakeQuery()
    q.status["isTriggerActive"] = True
    q.lastProgress = {"batchId": 4}
    assert not watch.stalled("raw", q, now=0)
    q.lastProgress = {"batchId": 5}  # a batch completed in between
    assert not watch.stalled("raw", q, now=90)
    assert not watch.stalled("raw", q, now=180)
    q.status["isTriggerActive"] = False  # waiting for the next trigger
    assert not watch.stalled("raw", q, now=500)
    q.status["isTriggerActive"] = True
    assert not watch.stalled("raw", q, now=510)
    assert watch.stalled("raw", q, now=611)


def test_the_first_batch_of_the_process_may_run_longer() -> None:
    # The cluster's failover test: a cold first batch takes minutes, a later one wedged in the
    # connector's schema refresh must be caught well within the test's wait.
    watch, q = _StallWatch(timeout_s=90, first_batch_timeout_s=600), FakeQuery()
    q.status["isTriggerActive"] = True
    assert not watch.stalled("bars", q, now=0)
    assert not watch.stalled("bars", q, now=600)
    assert watch.stalled("bars", q, now=600.5)
    q.lastProgress = {"batchId": 0}  # the first batch completed; the second one runs
    assert not watch.stalled("bars", q, now=601)
    assert not watch.stalled("bars", q, now=691)
    assert watch.stalled("bars", q, now=691.5)


def test_a_first_batch_timeout_below_the_timeout_counts_as_it() -> None:
    for first in (None, 0.0, 10.0):
        watch, q = _StallWatch(timeout_s=100, first_batch_timeout_s=first), FakeQuery()
        q.status["isTriggerActive"] = True
        assert not watch.stalled("raw", q, now=0)
        assert not watch.stalled("raw", q, now=100)
        assert watch.stalled("raw", q, now=100.5)


def test_the_first_batch_timeout_is_a_setting() -> None:
    env = {"BATCH_STALL_TIMEOUT": "90s", "FIRST_BATCH_STALL_TIMEOUT": "10m"}
    settings = StreamSettings.from_env(env)
    assert (settings.stall_timeout_ms, settings.first_batch_stall_timeout_ms) == (90_000, 600_000)
    assert StreamSettings.from_env({}).first_batch_stall_timeout_ms == 0
    with pytest.raises(ConfigError, match="FIRST_BATCH_STALL_TIMEOUT=.soon."):
        StreamSettings.from_env({"FIRST_BATCH_STALL_TIMEOUT": "soon"})


def test_local_checkpoints_use_the_in_process_file_manager() -> None:
    manager = "spark.sql.streaming.checkpointFileManagerClass"
    for local in ("/var/lib/market/checkpoints", "file:///tmp/cp", "relative/cp"):
        assert checkpoint_conf(local)[manager].endswith("FileSystemBasedCheckpointFileManager")
    for remote in ("hdfs://nn:8020/cp", "s3a://bucket/cp"):
        assert checkpoint_conf(remote) == {}
