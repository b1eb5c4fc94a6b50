"""The stall watch of the job supervisor (fake queries, no Spark)."""

from __future__ import annotations

from typing import Any

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


def test_local_checkpoints_use_the_in_process_file_manager() -> None:
    manager = "spark.sql.streaming.checkpointFileManagerClass"
    for local in ("/var/lib/market/checkpoints", "file:///tmp/cp", "relative/cp"):
        assert checkpoint_conf(local)[manager].endswith("FileSystemBasedCheckpointFileManager")
    for remote in ("hdfs://nn:8020/cp", "s3a://bucket/cp"):
        assert checkpoint_conf(remote) == {}
