"""Infra errors. Every message is one line a user can act on; ``__main__`` prints it and exits.

InfraError
 ├── JavaNotFoundError     no usable Java (17 for Kafka/Cassandra, 24+ for Trino)
 ├── PortInUseError        a port we need is held by another process
 ├── InstallError          Maven could not resolve the jars or the Trino server
 ├── ServiceStartError     a service died or did not answer in time (carries its last log lines)
 ├── MigrationError        a keyspace name or a CQL migration is not acceptable
 ├── SupervisorError       supervisord could not be started or refused a request
 ├── TrinoQueryError       Trino answered a query with an error (its message)
 └── DemoError             a step of the demo failed or the data did not arrive in time
"""

from __future__ import annotations

import sys


class InfraError(Exception):
    exit_code = 1


class JavaNotFoundError(InfraError):
    exit_code = 3


class PortInUseError(InfraError):
    exit_code = 4


class InstallError(InfraError):
    exit_code = 5


class ServiceStartError(InfraError):
    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class MigrationError(InfraError):
    """A keyspace name or a CQL migration is not acceptable (e.g. one changed after it ran)."""


class SupervisorError(InfraError):
    """supervisord could not be started or refused a request."""


class TrinoQueryError(InfraError):
    """Trino answered a query with an error; the message is Trino's."""


class DemoError(InfraError):
    """A step of ``python -m infra demo`` failed, or the data did not arrive in time."""


def report(exc: Exception) -> int:
    """Print ``exc`` as the command's one error line (and a failed service's last log lines);
    the exit status it asks for (``exit_code``), else 2 (a setting we cannot use)."""
    print(f"infra: error: {exc}", file=sys.stderr)
    if isinstance(exc, ServiceStartError):
        print(exc.log_tail, file=sys.stderr)
    exit_code: int = getattr(exc, "exit_code", 2)
    return exit_code
