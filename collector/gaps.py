"""Where gaps go: the ``collector_gaps`` Cassandra table (``schemas/cql/002_collector_gaps.cql``).

A gap write must never stop the collector: a failure is logged at ERROR with the whole gap (so the
log still has it) and counted in ``collector_gap_write_failures_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from collector.exceptions import GapStoreError
from collector.metrics import CollectorMetrics
from collector.models import Gap
from schemas.contracts import TABLE_COLLECTOR_GAPS
from schemas.runtime.cassandra import connect, driver_errors
from schemas.settings import CassandraSettings

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session


def _cassandra_errors() -> tuple[type[BaseException], ...]:
    """The driver's errors, and a socket failing under it (evaluated only when one is raised)."""
    return (*driver_errors(), OSError)


__all__ = ["CassandraGapStore", "GapSink", "LoggingGapStore"]

logger = logging.getLogger(__name__)


class GapSink(Protocol):
    def record(self, gap: Gap) -> None: ...

    def close(self) -> None: ...


def _describe(gap: Gap) -> str:
    start = datetime.fromtimestamp(gap.start_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return (
        f"gap {start} +{gap.duration_ms / 1000:.3f} s, reason {gap.reason} ({gap.detail}), "
        f"{len(gap.symbols)} symbol(s)"
    )


class LoggingGapStore:
    """Gaps in the log only (``COLLECTOR_GAPS=false``): a WARNING per gap."""

    def record(self, gap: Gap) -> None:
        logger.warning("collector %s: %s (not stored)", gap.collector_id, _describe(gap))

    def close(self) -> None:
        return None


class CassandraGapStore:
    """Writes each gap as one row of ``collector_gaps``.

    :param settings: Cassandra hosts, keyspace and credentials.
    :param metrics: counts written and failed gaps.
    :param connect: opens the ``(cluster, session)`` pair, as
        :func:`schemas.runtime.cassandra.connect` does (a test passes a fake).
    :raises GapStoreError: at construction, when Cassandra or the table is unreachable.
    """

    def __init__(
        self,
        settings: CassandraSettings,
        metrics: CollectorMetrics,
        *,
        connect: Callable[..., tuple[Cluster, Session]] = connect,
    ) -> None:
        self.metrics = metrics
        self.keyspace = settings.keyspace
        try:
            cluster, session = connect(settings, keyspace=settings.keyspace)
        except _cassandra_errors() as exc:
            raise GapStoreError(
                f"cassandra {','.join(settings.hosts)}:{settings.port} keyspace "
                f"{settings.keyspace!r}: cannot connect ({type(exc).__name__}: {exc}); "
                "set COLLECTOR_GAPS=false to run without recording gaps"
            ) from exc
        self._cluster: Cluster = cluster
        self._session: Session = session
        try:
            self._insert: Any = session.prepare(
                f"INSERT INTO {TABLE_COLLECTOR_GAPS} (day, gap_start, collector_id, gap_end, "
                "duration_ms, symbols, reason, detail, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
        except _cassandra_errors() as exc:
            cluster.shutdown()
            raise GapStoreError(
                f"cassandra keyspace {settings.keyspace!r}: table {TABLE_COLLECTOR_GAPS} is not "
                f"usable ({exc}); run `python -m infra migrate --keyspace {settings.keyspace}`"
            ) from exc

    def record(self, gap: Gap) -> None:
        start = datetime.fromtimestamp(gap.start_ms / 1000, tz=UTC)
        try:
            self._session.execute(
                self._insert,
                (
                    start.date(),
                    start,
                    gap.collector_id,
                    datetime.fromtimestamp(gap.end_ms / 1000, tz=UTC),
                    gap.duration_ms,
                    list(gap.symbols),
                    gap.reason,
                    gap.detail,
                    gap.source,
                ),
            )
        except _cassandra_errors():  # a lost gap row must not stop collecting; the log keeps it
            self.metrics.gap_write_failures.inc()
            logger.error(
                "collector %s: could not write %s to %s.%s",
                gap.collector_id,
                _describe(gap),
                self.keyspace,
                TABLE_COLLECTOR_GAPS,
                exc_info=True,
            )
            return
        self.metrics.gaps_recorded.inc()
        logger.warning("collector %s: recorded %s", gap.collector_id, _describe(gap))

    def close(self) -> None:
        self._cluster.shutdown()
