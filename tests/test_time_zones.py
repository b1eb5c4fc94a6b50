"""The tests that cross a time boundary between Python, Spark and Cassandra, again under host
time zones other than UTC.

Each zone runs those tests in a child pytest whose ``TZ`` is set before Python or Spark's JVM
starts (the JVM fixes its default zone at start-up, so one process cannot switch). New York is
behind UTC and changes with daylight saving; Kolkata is ahead by a half hour, so a naive local time
read as UTC moves a bar to another minute's half hour and, near midnight, to another day.

Only tests whose code converts a time run here: the pure rollups and forecasts compute on naive
UTC or epoch values and cannot see the zone (the daylight-saving folds of collected times are
tested in-process, ``tests/schemas/test_spark_times.py``); the GBM job's first test (its
statuses, and a second run to compare seeds) checks no time that the window, backtest and API
tests do not. Each child costs a JVM start and a streaming job, so the list is short.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, Stack

pytestmark = pytest.mark.integration

ZONES = ("America/New_York", "Asia/Kolkata")
JOB = "tests/gbm_analysis/test_job_integration.py"
# The streaming job writing 5-s bars and rolling them up through Cassandra (collected Spark times),
# the forecasts of Spark's timestamps, and the GBM job's window, backtest and API on stored bars.
TESTS = (
    "tests/stream_processor/test_pipeline_integration.py::test_known_trade_set_matches_pandas",
    "tests/gbm_analysis/test_forecast.py::test_forecast_frame_accepts_spark_timestamps",
    f"{JOB}::test_backtest_scores_the_realised_steps",
    f"{JOB}::test_api_serves_latest_forecast_and_backtest",
    f"{JOB}::test_a_bar_still_open_at_as_of_is_not_used",
)


# The summary line of a child run with -q, e.g. "8 passed in 101.70s (0:01:41)".
SUMMARY = re.compile(r"^=*\s*\d+ (passed|failed|error|skipped|deselected)\b.* in [\d.]+s\b")


def summary_line(output: str) -> str | None:
    """The child pytest's summary line, wherever it is in ``output``: a JVM thread can still
    print after it while the child exits (Spark's state store maintenance, as the SparkEnv
    stops)."""
    return next((line for line in reversed(output.splitlines()) if SUMMARY.match(line)), None)


def warning_options(config: pytest.Config) -> list[str]:
    """The ``-W`` options this run was given, so the child treats warnings as its parent does.

    ``make test-integration`` gives none: parent and child both take pyproject's filterwarnings
    (every warning an error but the named third-party ones). A ``-W`` given by hand, e.g.
    ``-W default`` while chasing a warning, applies to the child too.
    """
    return [arg for policy in config.option.pythonwarnings or () for arg in ("-W", policy)]


@pytest.fixture(scope="module")
def zone_runs(
    stack: Stack, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, str]]:
    """Each zone's child run, ``(returncode, output)``. The children run side by side, which
    saves little (148 s against 158 s one after the other in a clean-clone run): each is mostly
    its own JVM's and streaming job's CPU."""
    children = {}
    for zone in ZONES:
        home = tmp_path_factory.mktemp("tz")
        with open(home / "output.txt", "w", encoding="utf-8") as log:
            children[zone] = (
                home,
                subprocess.Popen(
                    [
                        sys.executable,
                        *("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"),
                        *warning_options(request.config),
                        f"--basetemp={home / 'tmp'}",
                        *TESTS,
                    ],
                    cwd=REPO_ROOT,
                    env={**os.environ, "TZ": zone, "KEEP_STACK": "1"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
            )
    try:
        return {
            zone: (child.wait(timeout=1800), (home / "output.txt").read_text(encoding="utf-8"))
            for zone, (home, child) in children.items()
        }
    finally:
        for _, child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.mark.parametrize("zone", ZONES)
def test_rollup_and_gbm_tests_pass_under_a_non_utc_host_zone(
    zone_runs: dict[str, tuple[int, str]], zone: str
) -> None:
    code, output = zone_runs[zone]
    assert code == 0, f"under TZ={zone}:\n{output[-9000:]}"
    summary = summary_line(output)
    assert summary is not None and " passed" in summary, f"under TZ={zone}:\n{output[-9000:]}"
    assert not re.search(r"\b(failed|error)", summary), summary


def test_the_summary_line_is_found_when_the_jvm_prints_after_it() -> None:
    # The Kolkata child's output in a clean-clone make test (2026-11-30): exit status 0, and
    # the state store's maintenance thread's warning printed after pytest's summary.
    output = (
        "........                                                                 [100%]\n"
        "8 passed in 101.70s (0:01:41)\n"
        "26/12/01 00:06:02 WARN StateStore: Error running maintenance thread\n"
        "java.lang.IllegalStateException: SparkEnv not active, cannot do maintenance on "
        "StateStores\n"
        "\tat java.base/java.lang.Thread.run(Thread.java:840)\n"
    )
    assert summary_line(output) == "8 passed in 101.70s (0:01:41)"
    assert summary_line("1 failed, 7 passed in 90.10s (0:01:30)\n").startswith("1 failed")
    assert summary_line("no tests ran in 0.01s\n") is None
    assert summary_line("") is None
