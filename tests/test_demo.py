"""`make demo`, the README's first command, end to end on the offline feed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, Stack

pytestmark = pytest.mark.integration


def counts(line: str) -> dict[str, int]:
    return {k: int(v.replace(",", "")) for k, v in re.findall(r"(\w+)=([\d,]+)", line)}


def test_demo_runs_the_whole_pipeline(stack: Stack) -> None:
    env = {**os.environ, "DEMO_SECONDS": "60", "DEMO_RATE": "100"}
    result = subprocess.run(
        [sys.executable, "-m", "infra", "demo"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
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
