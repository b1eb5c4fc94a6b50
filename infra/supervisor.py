"""supervisord as the stack's process manager: it starts every long-running process, restarts
one that exits unexpectedly (with supervisord's back-off while it keeps failing to start), and
keeps its log. One supervisord per STATE_DIR, reached over a private Unix socket.

Programs are registered when they are first started, from the command line and environment the
service computes (``ManagedProcess.launch``). The environment can hold passwords, so it is not
written into supervisord's configuration: each program runs ``python -m infra.supervised SPEC``,
which reads its command from a private (0600) JSON file and ``exec``s it, keeping the pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from supervisor.xmlrpc import SupervisorTransport

from infra.config import InfraConfig
from infra.errors import SupervisorError

# supervisord's process states that mean "not running and not about to be".
STOPPED_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})
RPC_INTERFACE_FACTORY = "supervisor.rpcinterface:make_main_rpcinterface"
# AF_UNIX paths are limited to 107 bytes on Linux.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class ProgramPolicy:
    """How supervisord treats one program.

    ``startsecs``: how long it must stay up to count as started (a quicker exit is a failed
    start, retried ``startretries`` times with a growing back-off, then FATAL).
    ``stopwaitsecs``: SIGTERM, then SIGKILL after this long (Cassandra flushes its memtables).
    """

    startsecs: int = 3
    startretries: int = 5
    stopwaitsecs: int = 60
    # Exit codes that mean "done on purpose": supervisord does not restart them.
    exitcodes: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    state: str
    pid: int | None
    exit_status: int
    uptime_s: float
    description: str

    @property
    def running(self) -> bool:
        return self.state not in STOPPED_STATES


class _SupervisorAPI(Protocol):
    """The part of supervisord's XML-RPC ``supervisor.*`` namespace this module calls, with the
    result types its documentation gives (xmlrpc.client types every answer as any marshallable
    value). The camelCase names are supervisord's."""

    def getState(self) -> dict[str, object]: ...
    def shutdown(self) -> bool: ...
    def reloadConfig(self) -> list[list[list[str]]]: ...
    def addProcessGroup(self, name: str) -> bool: ...
    def removeProcessGroup(self, name: str) -> bool: ...
    def startProcess(self, name: str, wait: bool) -> bool: ...
    def stopProcess(self, name: str, wait: bool) -> bool: ...
    def getProcessInfo(self, name: str) -> dict[str, object]: ...
    def getAllProcessInfo(self) -> list[dict[str, object]]: ...


class Supervisor:
    def __init__(self, config: InfraConfig) -> None:
        self.home = config.state_dir / "supervisor"
        self.conf = self.home / "supervisord.conf"
        self.programs_dir = self.home / "programs"
        self.log = self.home / "supervisord.log"
        self.pid_file = self.home / "supervisord.pid"
        self.socket = _socket_path(self.home)

    # --- the daemon -------------------------------------------------------------------------
    def is_running(self) -> bool:
        try:
            with self._rpc() as rpc:
                return rpc.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def ensure_running(self, timeout: float = 20) -> None:
        if self.is_running():
            return
        self.programs_dir.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        self._write_conf()
        # A socket left behind by a killed supervisord makes the new one refuse to start.
        Path(self.socket).unlink(missing_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise SupervisorError(
                f"supervisord did not start (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-500:]}; see {self.log}"
            )
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() > deadline:
                raise SupervisorError(
                    f"supervisord did not answer within {timeout:.0f} s; " f"see {self.log}"
                )
            time.sleep(0.2)

    def shutdown(self) -> bool:
        """Stop supervisord once nothing it runs is left; True if it was running."""
        if not self.is_running():
            return False
        if any(info.running for info in self.programs()):
            return False
        try:
            with self._rpc() as rpc:
                rpc.shutdown()
        except (OSError, xmlrpc.client.Error):
            pass
        deadline = time.monotonic() + 20
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        return True

    # --- programs ---------------------------------------------------------------------------
    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_file: Path,
        policy: ProgramPolicy,
    ) -> int | None:
        """Register (or re-register) ``name`` with this command and start it. Its pid."""
        self.ensure_running()
        spec = self.programs_dir / f"{name}.json"
        _write_private(spec, json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}))
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _write_private(
            self.programs_dir / f"{name}.conf", _program_section(name, spec, log_file, policy)
        )
        with self._rpc() as rpc:
            added, changed, removed = rpc.reloadConfig()[0]
            for group in removed:
                rpc.removeProcessGroup(group)
            for group in (*changed, *added):
                if group in changed:
                    self._stop(group)
                    rpc.removeProcessGroup(group)
                rpc.addProcessGroup(group)
            try:
                rpc.startProcess(name, True)
            except xmlrpc.client.Fault as exc:
                if "ALREADY_STARTED" not in exc.faultString:
                    raise SupervisorError(
                        f"{name}: supervisord could not start it ({exc.faultString}); "
                        f"see {log_file}"
                    ) from None
        info = self.info(name)
        return info.pid if info else None

    def stop(self, name: str) -> bool:
        """Stop ``name`` (SIGTERM to its process group, SIGKILL after its stopwaitsecs).
        True if it was running."""
        if not self.is_running() or self.info(name) is None:
            return False
        return self._stop(name)

    def forget(self, name: str) -> None:
        """Stop ``name`` and remove it from supervisord and from its configuration."""
        if self.is_running() and self.info(name) is not None:
            self._stop(name)
            try:
                with self._rpc() as rpc:
                    rpc.removeProcessGroup(name)
            except xmlrpc.client.Fault:
                pass
        for suffix in (".conf", ".json"):
            (self.programs_dir / f"{name}{suffix}").unlink(missing_ok=True)

    def info(self, name: str) -> ProgramInfo | None:
        """``name``'s state, or None when supervisord is not running or does not know it (one
        round trip: every ``pid()`` of the stack asks this)."""
        try:
            with self._rpc() as rpc:
                raw = rpc.getProcessInfo(name)
        except (OSError, xmlrpc.client.Error):
            return None
        return _program_info(raw)

    def programs(self) -> list[ProgramInfo]:
        if not self.is_running():
            return []
        with self._rpc() as rpc:
            return [_program_info(raw) for raw in rpc.getAllProcessInfo()]

    def _stop(self, name: str) -> bool:
        try:
            with self._rpc() as rpc:
                rpc.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" in exc.faultString:
                return False
            raise SupervisorError(
                f"{name}: supervisord could not stop it " f"({exc.faultString})"
            ) from None
        return True

    @contextmanager
    def _rpc(self) -> Iterator[_SupervisorAPI]:
        """supervisord's API over its own connection, closed on exit (an unclosed one leaks its
        socket until the garbage collector finds it)."""
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        with xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport) as proxy:
            yield cast(_SupervisorAPI, proxy.supervisor)

    def _write_conf(self) -> None:
        _write_private(
            self.conf,
            "\n".join(
                [
                    "[unix_http_server]",
                    f"file={self.socket}",
                    "chmod=0700",
                    "",
                    "[supervisord]",
                    f"logfile={self.log}",
                    "logfile_maxbytes=10MB",
                    "logfile_backups=2",
                    f"pidfile={self.pid_file}",
                    f"childlogdir={self.home}",
                    f"directory={os.getcwd()}",
                    "minfds=4096",
                    "",
                    "[rpcinterface:supervisor]",
                    f"supervisor.rpcinterface_factory = {RPC_INTERFACE_FACTORY}",
                    "",
                    "[supervisorctl]",
                    f"serverurl=unix://{self.socket}",
                    "",
                    "[include]",
                    f"files={self.programs_dir}/*.conf",
                    "",
                ]
            ),
        )


def _program_section(name: str, spec: Path, log_file: Path, policy: ProgramPolicy) -> str:
    return "\n".join(
        [
            f"[program:{name}]",
            f"command={sys.executable} -m infra.supervised {spec}",
            "autostart=false",
            "autorestart=unexpected",
            f"exitcodes={','.join(str(code) for code in policy.exitcodes)}",
            f"startsecs={policy.startsecs}",
            f"startretries={policy.startretries}",
            "stopsignal=TERM",
            f"stopwaitsecs={policy.stopwaitsecs}",
            # Spark's JVM and gunicorn's workers are children: signal the whole group.
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={log_file}",
            "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=3",
            "",
        ]
    )


def _program_info(raw: dict[str, object]) -> ProgramInfo:
    pid = int(str(raw.get("pid") or 0)) or None
    start, now = float(str(raw.get("start") or 0)), float(str(raw.get("now") or 0))
    return ProgramInfo(
        name=str(raw["name"]),
        state=str(raw["statename"]),
        pid=pid,
        exit_status=int(str(raw.get("exitstatus") or 0)),
        uptime_s=max(0.0, now - start) if pid else 0.0,
        description=str(raw.get("description") or ""),
    )


def _socket_path(home: Path) -> str:
    path = home / "supervisor.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return str(path)
    # A deep STATE_DIR (tests' temporary folders): a short path unique to that STATE_DIR.
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir()) / f"tdp-supervisor-{digest}.sock")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)
