"""Shared fixtures. Integration tests get the real stack from ``stack``; it runs ``python -m infra
up`` once per session (a no-op when it is already running) and leaves it running."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import HTTPServer
from pathlib import Path

import pytest

from schemas.settings import CassandraSettings, KafkaSettings, state_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
# Spark's Python workers run this interpreter whichever test creates the first session.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Stack:
    kafka: KafkaSettings
    cassandra: CassandraSettings
    state_dir: Path


def infra_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m infra ARGS`` as a user runs it; the caller judges the result."""
    return subprocess.run(
        [sys.executable, "-m", "infra", *args],
        cwd=REPO_ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def open_cassandra_clusters() -> set[int]:
    """The ids of the cassandra-driver clusters alive and not shut down in this process: one
    left open at exit makes the interpreter's exit race its scheduler thread."""
    import gc

    from cassandra.cluster import Cluster

    gc.collect()
    # type(), not isinstance(): isinstance on a dead weak proxy among the objects raises
    return {id(o) for o in gc.get_objects() if issubclass(type(o), Cluster) and not o.is_shutdown}


@contextmanager
def serving(server: HTTPServer) -> Iterator[HTTPServer]:
    """``server`` (a stand-in for a service, on a loopback port) answering on a daemon thread
    while the block runs; shut down and closed after it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_infra(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> None:
    result = infra_cli(*args, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"python -m infra {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The running stack; started (and stopped again at the end) if it was not running.
    KEEP_STACK=1 leaves a stack this session started running."""
    was_running = infra_cli("status").returncode == 0
    run_infra("up")
    yield Stack(
        kafka=KafkaSettings.from_env(),
        cassandra=CassandraSettings.from_env(),
        state_dir=state_dir(),
    )
    if not was_running and os.environ.get("KEEP_STACK") != "1":
        run_infra("down")


@dataclass(frozen=True)
class LiveMarket:
    """What ``python -m infra demo`` printed; its pipeline is still streaming."""

    stdout: str
    stderr: str


PIPELINE_STEPS = ("feed", "stream_processor", "collector", "forecaster")
# The demo streams until its forecast's last step is realised: half the default 12 steps, from
# 4 bars minimum instead of 8, so the session's demo streams about 50 s less.
LIVE_MARKET_ENV = {"DEMO_DURATION": "60", "DEMO_RATE": "100", "GBM_STEPS": "6", "GBM_MIN_BARS": "4"}


# pyspark 3.5 leaves the local socket of every collect() to the garbage collector
# (pyspark/rdd.py _load_from_socket: "The socket will be automatically closed when
# garbage-collected"), which warns. Only the tests that use a Spark session ignore it.
PYSPARK_SOCKET_WARNING = "ignore:unclosed <socket.socket:ResourceWarning"


# Runs before pytest deselects by marker, so `-m 'not integration'` leaves the Spark tests out.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the live market run after the others: its pipeline keeps streaming once
    started, and its load would slow every test after it. The fault matrix runs last of all
    (its rig stops the live market's pipeline first): it restarts Kafka and Cassandra under
    the tests. A test with a Spark session is an integration test: it starts a JVM, which
    ``make test-unit`` does without."""
    items.sort(key=run_order)
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.filterwarnings(PYSPARK_SOCKET_WARNING))


def run_order(item: pytest.Item) -> int:
    if item.get_closest_marker("reliability") is not None:
        return 2
    return int("live_market" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def live_market(stack: Stack) -> Iterator[LiveMarket]:
    """``make demo``'s pipeline, run once per session as a user runs it and left streaming the
    offline feed (feed, collector, stream processor, hourly forecaster) until the session ends
    (or longer with KEEP_STACK=1), for the tests that need data flowing."""
    run_infra("down", *PIPELINE_STEPS)  # a demo left running from an earlier session
    result = subprocess.run(
        [sys.executable, "-m", "infra", "demo"],
        cwd=REPO_ROOT,
        env={**os.environ, **LIVE_MARKET_ENV},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(
            f"python -m infra demo failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    yield LiveMarket(result.stdout, result.stderr)
    if os.environ.get("KEEP_STACK") != "1":
        run_infra("down", *PIPELINE_STEPS)


@contextmanager
def migrated_keyspace(prefix: str = "test") -> Iterator[CassandraSettings]:
    """A fresh keyspace with every migration applied (the settings to reach it), dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_infra("migrate", "--keyspace", name)
    try:
        yield CassandraSettings.from_env({**os.environ, "CASSANDRA_KEYSPACE": name})
    finally:
        run_infra("drop-keyspace", name)


@pytest.fixture(scope="session")
def test_keyspace(stack: Stack) -> Iterator[CassandraSettings]:
    """A fresh keyspace shared by the session's tests, dropped at its end."""
    with migrated_keyspace() as settings:
        yield settings


@pytest.fixture(scope="module")
def module_keyspace(stack: Stack) -> Iterator[CassandraSettings]:
    """A fresh keyspace of one test module alone (for counts that other modules' rows would
    change), dropped when the module ends."""
    with migrated_keyspace() as settings:
        yield settings


@pytest.fixture
def unique_topic(stack: Stack) -> Callable[[str], str]:
    """Factory for a fresh topic name (auto-created by the broker or by the code under test)."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"recorded market data not found at {SHARED_DATA} (CI and dev boxes have it)")
    return SHARED_DATA
