"""What the benchmark scripts share: the stack's command line, a free port, a progress line, the
CPU seconds of a service's processes and the results file.

The scripts put the repository root on ``sys.path`` first, then import this as
``benchmarks._common``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def infra(*args: str) -> None:
    """``python -m infra ARGS`` (a keyspace to migrate or drop); raises if it fails."""
    subprocess.run(
        [sys.executable, "-m", "infra", *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )


def simulated_feed(rate: int, port: int, symbols: Sequence[str], *extra: str) -> list[str]:
    """The command line of the offline feed simulating ``rate`` trades/s of ``symbols`` on
    ``port`` (warnings only in its log); ``extra`` options go last."""
    return [
        sys.executable,
        "-m",
        "collector.feed",
        "--simulate",
        "--rate",
        str(rate),
        "--port",
        str(port),
        "--symbols",
        ",".join(symbols),
        "--log-level",
        "WARNING",
        *extra,
    ]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log(msg: str) -> None:
    """A progress line with the wall-clock time, flushed at once."""
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def write_results(path: Path, results: Mapping[str, object], **machine: object) -> None:
    """``results`` as indented JSON at ``path``, after the time (UTC) and the machine: its cores,
    the Python version and the ``machine`` items given."""
    doc = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), **machine},
        **results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str))


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and every live descendant (Linux /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def service_pid(name: str) -> int | None:
    """The pid of a running stack service (``trino``, ``superset``, a cluster node such as
    ``kafka-2``), found as ``python -m infra status`` finds it: supervisord's, else the pid
    file's only while that process's command line is the service's (a stopped service's pid
    file can name a pid the system has since given to another process)."""
    from infra.__main__ import services
    from infra.config import InfraConfig
    from infra.topology import topology

    service = services(InfraConfig.from_env(), topology()).get(name)
    return None if service is None else service.pid()
