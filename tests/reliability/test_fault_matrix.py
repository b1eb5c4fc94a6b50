"""The fault matrix: while the offline feed streams, break one thing at a time, then account for
every trade the feed sent (stored once, dead-lettered, inside a recorded gap, or lost) and
compare the bars with an offline recompute. Nobody restarts anything by hand: supervisord does.

Runs last (``make test-reliability``, or at the end of ``make test``'s session against the
stack): it restarts the stack's Kafka and Cassandra. Writes ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from collector.feed.faults import HOSTILE_WITHOUT_LETTER, hostile_kind
from schemas.settings import CassandraSettings
from tests.conftest import PIPELINE_STEPS, REPO_ROOT, Stack, run_infra
from tests.reliability.accounting import Outcome, markdown_table
from tests.reliability.rig import RATE, Rig, now_ms, restart_engine, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

REPORT = REPO_ROOT / "docs" / "reliability.md"
OUTCOMES: list[Outcome] = []
HOSTILE_FRAMES = 10_000
HOSTILE_RATE = 2 * RATE


@pytest.fixture(scope="module")
def rig(stack: Stack) -> Iterator[Rig]:
    # The live market's pipeline, when this session's earlier tests started it, would load the
    # machine under the faults and count as theirs.
    run_infra("down", *PIPELINE_STEPS)
    keyspace = f"reliability_{os.urandom(4).hex()}"
    run_infra("migrate", "--keyspace", keyspace)
    cassandra = CassandraSettings.from_env({**os.environ, "CASSANDRA_KEYSPACE": keyspace})
    # Under the stack's STATE_DIR, so the steps' logs outlive the session; the last run only.
    home = stack.state_dir / "reliability"
    shutil.rmtree(home, ignore_errors=True)
    rig = Rig(stack, cassandra, home)
    rig.start()
    try:
        yield rig
    finally:
        rig.stop()
        write_report(OUTCOMES)
        run_infra("drop-keyspace", keyspace)


def segment(
    rig: Rig, fault: str, inject: Callable[[], str], *feed_args: str, after_s: float = 8
) -> Outcome:
    """Stream for a few seconds, inject the fault, stream on until the pipeline stores trades
    sent after it, stop the feed, let everything drain, and account for the segment."""
    rig.start_feed(*feed_args)
    wait_for(lambda: rig.trades_sent() >= 3 * RATE, 60, "the feed's first trades")
    note = inject()
    fault_end = now_ms()
    recover_s: float | None
    try:
        recover_s = wait_for(lambda: rig.stored_after(fault_end), 300, "trades after the fault")
    except AssertionError:
        recover_s = None
    time.sleep(after_s)
    rig.stop_feed()
    rig.drain()
    outcome = rig.outcome(fault, recover_s, note)
    OUTCOMES.append(outcome)
    print(outcome)
    return outcome


def assert_nothing_lost(outcome: Outcome) -> None:
    assert outcome.recover_s is not None, f"{outcome.fault}: the pipeline did not recover"
    assert outcome.lost == 0 and outcome.duplicated == 0, outcome
    assert outcome.bars_match, f"{outcome.fault}: bars differ from the offline recompute"


def kill_9(rig: Rig, step_name: str) -> Callable[[], str]:
    def inject() -> str:
        step = getattr(rig, step_name)
        pid = step.pid()
        assert pid is not None, f"{step_name} is not running"
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: (p := step.program()) is not None and p.state == "RUNNING" and p.pid != pid,
            120,
            f"supervisord to restart the {step_name}",
        )
        return f"restarted by supervisord (pid {pid} -> {step.pid()})"

    return inject


def test_collector_killed(rig: Rig) -> None:
    assert_nothing_lost(segment(rig, "collector killed (kill -9)", kill_9(rig, "collector")))


def test_stream_processor_killed(rig: Rig) -> None:
    assert_nothing_lost(
        segment(rig, "stream processor killed (kill -9)", kill_9(rig, "stream_processor"))
    )


def test_websocket_aborted_mid_frame(rig: Rig) -> None:
    def inject() -> str:
        return "TCP reset after half a frame"

    assert_nothing_lost(
        segment(rig, "websocket reset mid-frame", inject, "--abort-mid-frame-after", str(4 * RATE))
    )


def test_frame_dripped_slowly(rig: Rig) -> None:
    def inject() -> str:
        time.sleep(12)  # the drip starts at 4 s of trades and lasts 30 s
        return "one frame at 1 byte per ~0.3 s; stall timeout 5 s"

    assert_nothing_lost(
        segment(
            rig,
            "frame dripped slowly",
            inject,
            "--drip-after",
            str(4 * RATE),
            "--drip-seconds",
            "30",
        )
    )


def test_hostile_frames(rig: Rig) -> None:
    collector_pid = rig.collector.pid()

    def inject() -> str:
        wait_for(
            lambda: rig.trade_frames_sent() >= HOSTILE_FRAMES,
            300,
            f"{HOSTILE_FRAMES} hostile frames",
        )
        return (
            f">= {HOSTILE_FRAMES:,} hostile frames, one after each trade frame, "
            f"feed at {HOSTILE_RATE} trades/s"
        )

    # The feed's last --rate wins: twice the others' rate sends the 10,000 in half the time.
    outcome = segment(
        rig, "hostile frames", inject, "--hostile-every", "1", "--rate", str(HOSTILE_RATE)
    )
    assert_nothing_lost(outcome)
    assert rig.collector.pid() == collector_pid, "a hostile frame stopped the collector"
    # Every hostile frame the feed sent is one dead letter, but for the error frames it logs.
    sent = rig.feed_stat("hostile")
    assert sent >= HOSTILE_FRAMES
    letters = sum(hostile_kind(i)[0] not in HOSTILE_WITHOUT_LETTER for i in range(sent))
    assert len(rig.dead_letters()) == letters


def test_kafka_restarted(rig: Rig) -> None:
    def inject() -> str:
        restart_engine("kafka")
        return "python -m infra restart kafka"

    assert_nothing_lost(segment(rig, "Kafka restarted", inject))


def test_kafka_down_for_60_s(rig: Rig) -> None:
    def inject() -> str:
        run_infra("down", "kafka")
        time.sleep(60)
        restart_engine("kafka")
        return "down 60 s, then up"

    assert_nothing_lost(segment(rig, "Kafka down for 60 s", inject))


def test_cassandra_restarted(rig: Rig) -> None:
    def inject() -> str:
        restart_engine("cassandra")
        return "python -m infra restart cassandra"

    assert_nothing_lost(segment(rig, "Cassandra restarted", inject))


def write_report(outcomes: list[Outcome]) -> None:
    if not outcomes:
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    REPORT.write_text(
        "# Reliability: the fault matrix\n\n"
        "Regenerated by `make test-reliability` (part of `make test`); this run: "
        f"{stamp}, feed at {RATE} trades/s over 4 symbols, the collector, the stream processor "
        "and the feed under supervisord, Kafka and Cassandra restarted through "
        "`python -m infra`.\n\n"
        "Each row is one feed segment: a few seconds of trades, the fault, trades until the "
        "pipeline stores one sent after the fault (*recovered in*, from the end of the "
        "fault), then the feed stops and the pipeline drains. Every trade the feed sent is "
        "counted once: *stored* (exactly once), *duplicated* (stored more than once), "
        "*dead-lettered* (in the DLQ with a reason), *in gaps* (not stored, inside a "
        "`collector_gaps` row the collector wrote), else *lost*. *bars = recompute*: every "
        "5-s bar equals a pandas recompute of the stored trades.\n\n"
        f"{markdown_table(outcomes)}\n",
        encoding="utf-8",
    )
