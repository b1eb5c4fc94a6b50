"""The pipeline's own long-running steps (offline feed, collector, stream processor, hourly
forecaster) as processes that outlive the command that started them.

``make demo`` starts them and leaves them running so the dashboards stay live; ``make down``
stops them before the engines they write to, and ``make status`` lists them while they run.
supervisord runs them (see ``infra.supervisor``): a step killed or crashed is restarted, one
that keeps failing to start ends FATAL and shows so in ``status``. Their logs live under
``$STATE_DIR/demo/<step>/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from infra.config import InfraConfig
from infra.errors import InfraError
from infra.service import ManagedProcess

# In start order; ``down`` stops them in reverse, the producer before the consumers.
STEP_MODULES = {
    "feed": "collector.feed",
    "stream_processor": "stream_processor",
    "collector": "collector",
    "forecaster": "gbm_analysis",
}


class PipelineProcess(ManagedProcess):
    """``python -m <module> ARGS`` run in the background with its own pid file and log."""

    def __init__(
        self,
        config: InfraConfig,
        name: str,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        ports: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        super().__init__(config)
        self.module = STEP_MODULES[name]
        self.home = config.state_dir / "demo" / name
        self.log_dir = self.home
        self.data_dir = self.home
        self.pid_file = self.home / "pid"
        self.stdout_log = self.home / "output.log"
        self._args = args
        self._env = env
        self._ports = ports or {}

    @property
    def marker(self) -> str:
        # The command line is NUL-separated; "-m\0collector\0" does not match "collector.feed".
        return f"-m\0{self.module}\0"

    @property
    def ports(self) -> dict[str, int]:
        return self._ports

    @property
    def main_log(self) -> Path:
        return self.stdout_log

    @property
    def start_timeout(self) -> float:
        return 30

    @property
    def was_started(self) -> bool:
        """supervisord keeps a step until ``down``, so one that exited or kept failing shows."""
        return self.program() is not None or self.pid_file.exists()

    def launch(self) -> tuple[list[str], dict[str, str]]:
        if self._args is None or self._env is None:
            raise InfraError(f"{self.name}: no command to start it with")
        return [sys.executable, "-u", "-m", self.module, *self._args], self._env

    def answers(self) -> bool:
        return self.pid() is not None

    def after_ready(self) -> None:
        pass

    def stop(self) -> bool:
        stopped = super().stop()
        # A stopped step is forgotten: the next demo registers it with its new arguments.
        self.supervisor.forget(self.name)
        return stopped


def pipeline_steps(config: InfraConfig) -> dict[str, PipelineProcess]:
    """Handles for stopping and inspecting the steps; starting needs arguments (see demo)."""
    return {name: PipelineProcess(config, name) for name in STEP_MODULES}
