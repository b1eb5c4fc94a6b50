"""The demo's pipeline steps outlive the demo, show in ``status`` and stop with ``down``."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from infra.config import InfraConfig
from infra.errors import InfraError
from infra.pipeline import PipelineProcess, pipeline_steps
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


def test_status_lists_a_running_step_then_an_exited_one_and_down_forgets_it(
    tmp_path: Path,
) -> None:
    config = config_in(tmp_path)
    env = {**os.environ, "STATE_DIR": str(tmp_path)}
    port = free_port()
    feed = PipelineProcess(config, "feed", ["--simulate", "--port", str(port), "--rate", "5"],
                           env, {"feed": port})
    assert feed.start()
    try:
        assert feed.pid() is not None
        status = infra_cli("status", env=env)
        assert re.search(rf"^feed\s+{feed.pid()}\s+running$", status.stdout, re.M), status.stdout
        assert "collector" not in status.stdout  # never started: not listed

        os.kill(feed.pid() or 0, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while feed.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        status = infra_cli("status", env=env)
        assert re.search(r"^feed\s+-\s+exited, see .*output\.log$", status.stdout, re.M)
        assert status.returncode == 1

        down = infra_cli("down", "feed", env=env)
        assert down.returncode == 0, down.stderr
        assert "feed" not in infra_cli("status", env=env).stdout.split("state:")[0]
    finally:
        feed.stop()


def test_down_stops_a_running_step(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    env = {**os.environ, "STATE_DIR": str(tmp_path)}
    port = free_port()
    feed = PipelineProcess(config, "feed", ["--simulate", "--port", str(port), "--rate", "5"],
                           env, {"feed": port})
    feed.start()
    pid = feed.pid()
    assert pid is not None
    down = infra_cli("down", env=env)
    assert down.returncode == 0, down.stderr
    assert "feed: stopped" in down.stdout
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(
        f"/proc/{pid}/status").read_text()


def test_up_refuses_a_pipeline_step() -> None:
    result = infra_cli("up", "collector")
    assert result.returncode != 0
    assert "collector: started by `make demo`" in result.stderr
