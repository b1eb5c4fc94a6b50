"""The explorer as a service of ``python -m infra``, without starting anything."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from infra.__main__ import services
from infra.cassandra import READER_ROLE
from infra.config import InfraConfig
from infra.streamlit import APP, StreamlitService
from tests.conftest import infra_cli


def config(tmp_path: Path, **env: str) -> InfraConfig:
    return InfraConfig.from_env({**os.environ, "STATE_DIR": str(tmp_path), **env})


def test_registered_last_so_it_starts_after_cassandra(tmp_path: Path) -> None:
    names = list(services(config(tmp_path)))
    assert names.index("streamlit") > names.index("cassandra")
    assert names[-1] == "streamlit"


def test_launch_runs_headless_on_loopback_with_the_reader_role_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMLIT_PORT", "8642")
    monkeypatch.setenv("CASSANDRA_USERNAME", "market_app")
    monkeypatch.setenv("CASSANDRA_PASSWORD", "app-secret")
    svc = StreamlitService(config(tmp_path))
    argv, env = svc.launch()
    assert argv[1:5] == ["-m", "streamlit", "run", str(APP)]
    flags = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert flags == {
        "--server.address": "127.0.0.1",
        "--server.port": "8642",
        "--server.headless": "true",
        "--server.fileWatcherType": "none",
        "--server.runOnSave": "false",
        "--browser.gatherUsageStats": "false",
        "--client.showErrorDetails": "none",
        "--client.toolbarMode": "viewer",
        "--logger.level": "info",
    }
    credentials = tmp_path / "credentials.env"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert env["CASSANDRA_USERNAME"] == READER_ROLE
    assert f"CASSANDRA_READER_PASSWORD={env['CASSANDRA_PASSWORD']}\n" in credentials.read_text()
    assert env["CASSANDRA_PASSWORD"] != "app-secret"
    assert not any(env["CASSANDRA_PASSWORD"] in part for part in argv)
    assert svc.ports == {"http": 8642}
    assert svc.main_log == tmp_path / "streamlit" / "logs" / "stdout.log"
    assert svc.marker == "dashboards/streamlit_app.py" and svc.marker in " ".join(argv)


def test_answers_only_on_a_real_health_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMLIT_PORT", str(free_port()))
    assert StreamlitService(config(tmp_path)).answers() is False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("command", "variable", "value", "message"),
    [
        (("status",), "STREAMLIT_PORT", "web", "STREAMLIT_PORT='web' is not a port number"),
        (
            ("up", "streamlit"),
            "STREAMLIT_REFRESH",
            "often",
            "STREAMLIT_REFRESH='often': expected a duration like",
        ),
    ],
)
def test_bad_setting_fails_in_one_line_before_starting_anything(
    tmp_path: Path, command: tuple[str, ...], variable: str, value: str, message: str
) -> None:
    env = {
        **os.environ,
        "STATE_DIR": str(tmp_path),
        "STREAMLIT_PORT": str(free_port()),
        variable: value,
    }
    result = infra_cli(*command, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"infra: error: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "streamlit" / "pid").exists()
