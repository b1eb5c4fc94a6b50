"""The demo's pipeline steps outlive the demo, show in ``status`` and stop with ``down``."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.config import InfraConfig
from infra.errors import InfraError, SupervisorError
from infra.pipeline import PipelineProcess, pipeline_steps
from infra.supervisor import ProgramPolicy, Supervisor
from tests.conftest import infra_cli
from tests.infra.test_stack import free_port


def config_in(state: Path) -> InfraConfig:
    return InfraConfig.from_env({**os.environ, "STATE_DIR": str(state)})


def test_each_step_recognises_only_its_own_command_line(tmp_path: Path) -> None:
    steps = pipeline_steps(config_in(tmp_path))
    feed = "\0".join([sys.executable, "-u", "-m", "collector.feed", "--simulate", ""])
    collector = "\0".join([sys.executable, "-u", "-m", "collector", ""])
    assert steps["feed"].marker in feed
    assert steps["collector"].marker in collector
    assert steps["collector"].marker not in feed
    assert steps["feed"].marker not in collector


def test_a_step_without_a_command_cannot_start(tmp_path: Path) -> None:
    step = PipelineProcess(config_in(tmp_path), "collector")
    with pytest.raises(InfraError, match="collector: no command"):
        step.launch()


def wait_for(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(0.2)


def simulated_feed(config: InfraConfig, env: dict[str, str], *extra: str) -> PipelineProcess:
    port = free_port()
    return PipelineProcess(
        config,
        "feed",
        ["--simulate", "--port", str(port), "--rate", "5", *extra],
        env,
        {"feed": port},
    )


def test_a_killed_step_is_restarted_by_supervisord_and_shows_in_status(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    env = {**os.environ, "STATE_DIR": str(tmp_path)}
    feed = simulated_feed(config, env)
    assert feed.start()
    try:
        first = feed.pid()
        assert first is not None
        status = infra_cli("status", env=env)
        assert re.search(
            rf"^feed\s+{first}\s+RUNNING\s+running$", status.stdout, re.M
        ), status.stdout
        assert "collector" not in status.stdout  # never started: not listed

        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: (program := feed.program()) is not None
            and program.state == "RUNNING"
            and program.pid != first
        )
        status = infra_cli("status", env=env)
        assert re.search(rf"^feed\s+{feed.pid()}\s+RUNNING\s+running$", status.stdout, re.M)
    finally:
        feed.stop()
        Supervisor(config).shutdown()


def test_a_step_that_keeps_failing_ends_fatal_and_down_forgets_it(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    env = {**os.environ, "STATE_DIR": str(tmp_path)}
    feed = simulated_feed(config, env, "--rate", "not-a-number")
    # Any exit within 30 s is a failed start, however slowly the machine runs its imports.
    feed.policy = ProgramPolicy(startsecs=30, startretries=1)
    try:
        with contextlib.suppress(SupervisorError):  # raised when it fails before start returns
            feed.start()
        wait_for(
            lambda: (program := feed.program()) is not None and program.state == "FATAL",
            timeout=120,
        )
        status = infra_cli("status", env=env)
        assert re.search(
            r"^feed\s+-\s+FATAL\s+exited, see .*output\.log$", status.stdout, re.M
        ), status.stdout
        assert status.returncode == 1
        assert "--rate" in feed.stdout_log.read_text()  # the step's own error, in its log

        down = infra_cli("down", "feed", env=env)
        assert down.returncode == 0, down.stderr
        assert "feed" not in infra_cli("status", env=env).stdout.split("state:")[0]
    finally:
        feed.stop()
        Supervisor(config).shutdown()


def test_down_stops_a_running_step(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    env = {**os.environ, "STATE_DIR": str(tmp_path)}
    feed = simulated_feed(config, env)
    feed.start()
    pid = feed.pid()
    assert pid is not None
    down = infra_cli("down", env=env)
    assert down.returncode == 0, down.stderr
    assert "feed: stopped" in down.stdout
    assert (
        not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    )
    assert not Supervisor(config).is_running()  # nothing left to supervise: it left too


def test_up_refuses_a_pipeline_step() -> None:
    result = infra_cli("up", "collector")
    assert result.returncode != 0
    assert "collector: started by `make demo`" in result.stderr
