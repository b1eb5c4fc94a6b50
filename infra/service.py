"""What every managed service shares: layout under STATE_DIR, start, wait, stop.

``ManagedProcess`` is any long-running process of the stack (a JVM, gunicorn, Streamlit);
``Service`` is a JVM resolved from Maven Central.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

from infra import process
from infra.config import InfraConfig
from infra.errors import PortInUseError, ServiceStartError
from infra.java import find_java17
from infra.maven import resolve_jars
from infra.supervisor import ProgramInfo, ProgramPolicy, Supervisor

CONF_DIR = Path(__file__).resolve().parent / "conf"


def render(template: str, **values: object) -> str:
    text = (CONF_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", str(value))
    return text


class ManagedProcess(ABC):
    name: str

    def __init__(self, config: InfraConfig) -> None:
        self.config = config
        self.home = config.state_dir / self.name
        self.log_dir = self.home / "logs"
        self.data_dir = self.home / "data"
        self.pid_file = self.home / "pid"
        self.stdout_log = self.log_dir / "stdout.log"

    @property
    @abstractmethod
    def marker(self) -> str:
        """A string in the process's command line that tells it from a recycled pid."""

    @property
    @abstractmethod
    def ports(self) -> dict[str, int]: ...

    @property
    @abstractmethod
    def main_log(self) -> Path: ...

    @property
    @abstractmethod
    def start_timeout(self) -> float:
        """Seconds ``up`` waits for the first answer."""

    @abstractmethod
    def launch(self) -> tuple[list[str], dict[str, str]]:
        """Install what is missing, do first-start work; the command line and environment."""

    @abstractmethod
    def answers(self) -> bool:
        """One real protocol round trip (not just an open port)."""

    @abstractmethod
    def after_ready(self) -> None:
        """Post-start work such as creating users, topics or tables; must be idempotent."""

    # How supervisord restarts and stops it; JVMs override the stop wait where they need more.
    policy = ProgramPolicy()
    # The loopback address its ports bind (a Cassandra node of the cluster topology has its own).
    bind_host = "127.0.0.1"

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.config)

    def pid(self) -> int | None:
        info = self.supervisor.info(self.name)
        if info is not None and info.running and info.pid:
            return info.pid
        # Started before supervisord managed the stack (or supervisord itself was killed).
        return process.read_pid(self.pid_file, self.marker)

    def program(self) -> ProgramInfo | None:
        """supervisord's view: state, pid, uptime, last exit status."""
        return self.supervisor.info(self.name)

    def start(self) -> bool:
        """Start under supervisord unless already running. False when it was already running."""
        if self.pid() is not None:
            return False
        for label, port in self.ports.items():
            if not process.port_bindable(port, self.bind_host):
                raise PortInUseError(
                    f"{self.name}: port {self.bind_host}:{port} ({label}) is already in use by "
                    "another process; stop it or configure another port (see README, "
                    "Configuration)"
                )
        for folder in (self.log_dir, self.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        argv, env = self.launch()
        pid = self.supervisor.start(self.name, argv, env, self.stdout_log, self.policy)
        if pid is not None:
            self.pid_file.write_text(str(pid))
        return True

    def wait_ready(self, timeout: float) -> float:
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServiceStartError(
                    f"{self.name} exited during start-up", self.last_log_lines()
                )
            if self.answers():
                return time.monotonic() - start
            time.sleep(1)
        raise ServiceStartError(
            f"{self.name} did not answer within {timeout:.0f} s", self.last_log_lines()
        )

    def stop(self) -> bool:
        stopped = self.supervisor.stop(self.name)
        # A process from before supervisord, or orphaned by a killed supervisord.
        if (pid := process.read_pid(self.pid_file, self.marker)) is not None:
            process.stop(pid, timeout=self.policy.stopwaitsecs)
            stopped = True
        self.pid_file.unlink(missing_ok=True)
        return stopped

    def last_log_lines(self, lines: int = 30) -> str:
        parts = []
        for path in dict.fromkeys((self.main_log, self.stdout_log)):
            if path.exists():
                parts.append(f"--- {path}\n{process.tail(path, lines)}")
        return "\n".join(parts) or f"(no logs under {self.log_dir})"


class Service(ManagedProcess):
    """A JVM whose jars Maven resolves into the jar cache."""

    main_class: str

    @property
    def marker(self) -> str:
        return self.main_class

    @abstractmethod
    def command(self, java: Path, lib: Path) -> list[str]: ...

    def find_java(self) -> Path:
        return find_java17(self.config.java17_home)

    @abstractmethod
    def prepare(self, java: Path, lib: Path) -> None:
        """First-start work such as formatting storage; must be idempotent."""

    def install(self) -> Path:
        return resolve_jars(self.name, self.config.jars_dir)

    def launch(self) -> tuple[list[str], dict[str, str]]:
        java = self.find_java()
        lib = self.install()
        self.prepare(java, lib)
        env = {**os.environ, "JAVA_HOME": str(java.parent.parent), "MALLOC_ARENA_MAX": "4"}
        return self.command(java, lib), env
