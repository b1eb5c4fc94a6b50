"""The systemd units a server runs, and ``python -m infra serve`` that two of them call."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infra.config import InfraConfig
from infra.systemd import render_units, unit_templates
from tests.conftest import REPO_ROOT, Stack
from tests.infra.test_stack import free_port

LONG_RUNNING = ("tdp-collector", "tdp-stream-processor", "tdp-superset", "tdp-streamlit")


def rendered(tmp_path: Path) -> dict[str, configparser.ConfigParser]:
    config = InfraConfig.from_env({**os.environ, "STATE_DIR": str(tmp_path / "state")})
    units = {}
    for path in render_units(config, tmp_path / "units", user="root"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(path)
        units[path.stem if path.suffix == ".service" else path.name] = parser
    return units


def test_units_are_filled_in_for_this_checkout(tmp_path: Path) -> None:
    units = rendered(tmp_path)
    assert len(units) == len(unit_templates())
    for name in LONG_RUNNING:
        service = units[name]["Service"]
        assert service["ExecStart"].startswith(f"{sys.executable} -m ")
        assert service["Restart"] == "on-failure"
        assert service["WorkingDirectory"] == str(REPO_ROOT)
        assert f"STATE_DIR={tmp_path / 'state'}" in service["Environment"]
        assert "${" not in "".join(f"{k}={v}" for k, v in service.items())
    assert units["tdp-forecaster.timer"]["Timer"]["OnCalendar"] == "hourly"
    assert units["tdp-forecaster"]["Service"]["Type"] == "oneshot"


@pytest.mark.parametrize("name", [*LONG_RUNNING, "tdp-forecaster"])
def test_every_unit_runs_a_command_that_exists(tmp_path: Path, name: str) -> None:
    argv = rendered(tmp_path)[name]["Service"]["ExecStart"].split()
    result = subprocess.run(
        [*argv[:3], "--help"] if argv[2] != "infra" else [*argv[:3], argv[3], "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout.lower()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_every_unit_without_a_warning(tmp_path: Path) -> None:
    rendered(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(map(str, (tmp_path / "units").iterdir()))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.integration
def test_serve_runs_a_service_in_the_foreground_until_sigterm(stack: Stack, tmp_path: Path) -> None:
    # Its own STATE_DIR and port, so it cannot collide with the stack's Streamlit.
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(stack.state_dir / "credentials.env", state / "credentials.env")
    port = free_port()
    env = {**os.environ, "STATE_DIR": str(state), "STREAMLIT_PORT": str(port)}
    # The with block closes the stdout pipe and reaps the child, whatever the test's outcome.
    with subprocess.Popen(
        [sys.executable, "-m", "infra", "serve", "streamlit"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            # The child's own output comes first (under systemd it all goes to the journal).
            lines = iter(server.stdout.readline, "")
            assert any(line.startswith("infra: streamlit: serving") for line in lines)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
                assert r.read() == b"ok"
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
        finally:
            if server.poll() is None:
                server.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                pass
        except OSError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("streamlit still answers after serve exited")
