"""`make demo`, the README's first command, end to end on the offline feed."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from infra.demo_counts import count_since
from schemas.runtime.cassandra import connect
from tests.conftest import LiveMarket, Stack, infra_cli

pytestmark = pytest.mark.integration


def counts(line: str) -> dict[str, int]:
    return {k: int(v.replace(",", "")) for k, v in re.findall(r"(\w+)=([\d,]+)", line)}


def test_demo_runs_the_whole_pipeline(live_market: LiveMarket) -> None:
    out = live_market.stdout
    assert "demo: done." in out
    kafka_line = next(line for line in out.splitlines() if line.strip().startswith("Kafka "))
    cassandra_line = next(
        line for line in out.splitlines() if line.strip().startswith("Cassandra ")
    )
    kafka, cassandra = counts(kafka_line), counts(cassandra_line)
    # Every trade in Kafka reached Cassandra exactly once (replay-safe keys, no loss).
    assert kafka["trades"] > 1000
    assert cassandra["trades"] == kafka["trades"]
    for table in ("trades_agg_5s", "trades_agg_1m", "gbm_forecasts", "gbm_backtest"):
        assert cassandra[table] > 0, table
    assert re.search(r"[1-9]\d* scored", out), "the backtest scored no forecast step"


def test_demo_ends_with_the_dashboard_urls_and_where_the_login_is(
    live_market: LiveMarket, stack: Stack
) -> None:
    out = live_market.stdout
    assert re.search(r"Superset\s+http://127\.0\.0\.1:\d+/superset/dashboard/market-overview/", out)
    assert re.search(r"Streamlit\s+http://127\.0\.0\.1:\d+/", out)
    assert f"{stack.state_dir}/credentials.env" in out
    assert "make down" in out


def test_the_market_stays_live_after_the_demo(live_market: LiveMarket, stack: Stack) -> None:
    status = infra_cli("status")
    for step in ("feed", "stream_processor", "collector", "forecaster"):
        assert re.search(rf"^{step}\s+\d+\s+RUNNING\s+running$", status.stdout, re.M), status.stdout
    cluster, session = connect(stack.cassandra, keyspace=stack.cassandra.keyspace)
    try:
        # Event time, not now: the offline feed holds its market clock while nobody subscribes
        # (so its tape has no hole), and the demo restarts the collector once it has counted,
        # so the trades arriving now are stamped as far behind the wall clock as the feed had
        # no audience (44 s in one run; with `since = now` the wait took 59.5 s of its 60).
        since = datetime.now(UTC) - timedelta(minutes=10)

        def stored() -> int:
            return sum(count_since(session, "trades", since).values())

        before = stored()
        deadline = time.monotonic() + 60
        while (after := stored()) <= before and time.monotonic() < deadline:
            time.sleep(3)
    finally:
        cluster.shutdown()
    assert after > before, "no new trade reached Cassandra in 60 s after the demo"
