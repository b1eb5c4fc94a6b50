"""The forecast explorer (Streamlit) as a service of the stack, reading Cassandra read-only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dashboards.settings import ExplorerSettings
from infra import process
from infra.cassandra import CassandraService
from infra.service import ManagedProcess

APP = Path(__file__).resolve().parent.parent / "dashboards" / "streamlit_app.py"


def streamlit_argv(app: Path, host: str, port: int) -> list[str]:
    """Headless on loopback, no usage statistics, no file watcher (nothing reloads under a
    supervisor), no tracebacks in the browser (the app reports failures in one line) and no
    developer menu (deploy, clear cache) for viewers."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--client.showErrorDetails",
        "none",
        "--client.toolbarMode",
        "viewer",
        "--logger.level",
        "info",
    ]


class StreamlitService(ManagedProcess):
    name = "streamlit"

    @property
    def marker(self) -> str:
        # Relative, so a checkout elsewhere sharing this STATE_DIR still recognises the process.
        return f"{APP.parent.name}/{APP.name}"

    @property
    def ports(self) -> dict[str, int]:
        return {"http": self.config.streamlit_port}

    @property
    def main_log(self) -> Path:
        return self.stdout_log

    @property
    def start_timeout(self) -> float:
        return 60.0

    def launch(self) -> tuple[list[str], dict[str, str]]:
        # The app's own settings are read again by the app; checking them here makes a bad value
        # fail `up` in one line instead of showing up only in the browser.
        ExplorerSettings.from_env()
        user, password = CassandraService(self.config).reader_credentials()
        # The read-only role goes in the environment (never argv, which `ps` shows to everyone);
        # it overrides the application role that credentials.env would otherwise supply.
        env = {
            **os.environ,
            "CASSANDRA_USERNAME": user,
            "CASSANDRA_PASSWORD": password,
            "CASSANDRA_PORT": str(self.config.cassandra_port),
            "STATE_DIR": str(self.config.state_dir),
        }
        return streamlit_argv(APP, "127.0.0.1", self.config.streamlit_port), env

    def answers(self) -> bool:
        return process.http_body_is(
            f"http://127.0.0.1:{self.config.streamlit_port}/_stcore/health", b"ok"
        )

    def after_ready(self) -> None:
        """Nothing to set up: the app connects to Cassandra when a page is opened."""
