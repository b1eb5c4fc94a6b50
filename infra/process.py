"""Background JVM processes: pid files, port checks, graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


def venv_bin(name: str, missing: Callable[[Path], Exception]) -> Path:
    """The script ``name`` that the venv's ``bin`` holds next to this interpreter (a tool its
    packages install); ``missing(path)`` is raised when it is not there."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise missing(path)
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on ``port``. SO_REUSEADDR as the JVMs use it, so the
    TIME_WAIT connections a just-stopped broker leaves behind do not count as "in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_body_is(url: str, expected: bytes, timeout: float = 3) -> bool:
    """True if GET ``url`` answers with ``expected`` (whitespace stripped): a health check."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.read().strip() == expected)
    except OSError:
        return False


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and its command line holds ``marker``."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    if marker not in cmdline:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    if "State:\tZ" in status:
        return None
    return pid


def spawn(
    argv: Sequence[str], *, marker: str, log_file: Path, pid_file: Path, env: dict[str, str]
) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    pid_file.write_text(str(proc.pid))
    # Until exec completes /proc shows the forking Python; wait so read_pid sees the JVM.
    deadline = time.monotonic() + 10
    while read_pid(pid_file, marker) is None and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return proc.pid


def stop(pid: int, *, timeout: float = 60.0) -> bool:
    """SIGTERM, wait, then SIGKILL. Returns True if it exited on SIGTERM."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.3)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    while _alive(pid):
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        # Reap if it is our child (tests run infra in-process); ignore otherwise.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])
