"""For a server: systemd units for the long-running services, and ``serve``, which runs one
managed service in the foreground the way a unit wants it.

On this machine supervisord runs everything (``infra.supervisor``); on a server systemd does the
same job: ``python -m infra units --dest DIR`` renders the unit files in ``infra/systemd/`` for
this checkout (its interpreter, folder, STATE_DIR and a user), ready to copy into
``/etc/systemd/system``.
"""

from __future__ import annotations

import getpass
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from infra.config import InfraConfig
from infra.errors import InfraError
from infra.service import ManagedProcess

UNITS_DIR = Path(__file__).resolve().parent / "systemd"
REPO_ROOT = Path(__file__).resolve().parent.parent


def unit_templates() -> list[Path]:
    return sorted(p for p in UNITS_DIR.iterdir() if p.suffix in (".service", ".timer"))


def render_units(config: InfraConfig, dest: Path, user: str | None = None) -> list[Path]:
    """Write every unit, filled in for this checkout, into ``dest``; the paths written."""
    values = {
        "PYTHON": sys.executable,
        "REPO": str(REPO_ROOT),
        "STATE_DIR": str(config.state_dir.resolve()),
        "USER": user or getpass.getuser(),
    }
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for template in unit_templates():
        text = template.read_text()
        for key, value in values.items():
            text = text.replace("${" + key + "}", value)
        target = dest / template.name
        target.write_text(text)
        written.append(target)
    return written


def serve(service: ManagedProcess) -> int:
    """Start ``service`` as a child, wait until it answers, do its post-start work (Superset's
    dashboard import), then wait for it; SIGTERM/SIGINT are passed on. Its exit code."""
    if service.pid() is not None:
        raise InfraError(
            f"{service.name} is already running (pid {service.pid()}); "
            "stop it first (`python -m infra down " + service.name + "`)"
        )
    for folder in (service.log_dir, service.data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    argv, env = service.launch()
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    service.pid_file.write_text(str(child.pid))

    def forward(signum: int, _: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    try:
        service.wait_ready(service.start_timeout)
        service.after_ready()
        print(f"infra: {service.name}: serving (pid {child.pid})", flush=True)
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait(timeout=service.policy.stopwaitsecs)
        service.pid_file.unlink(missing_ok=True)
