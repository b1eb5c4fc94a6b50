"""Cassandra I/O of the GBM job: bars in, forecasts, runs and backtests out.

The forecast job reads bars and writes results through Spark (the Cassandra connector); the
backtest and the API read with the cassandra driver. Driver errors are translated to
:class:`~gbm_analysis.exceptions.StorageError` here, at the boundary.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gbm_analysis.config import GbmSettings
from gbm_analysis.exceptions import StorageError
from schemas.contracts import TABLE_AGG_5S
from schemas.gbm_tables import (
    PERCENTILES,
    PERCENTILES_BEFORE_010,
    TABLE_GBM_BACKTEST,
    TABLE_GBM_FORECAST_RUNS,
    TABLE_GBM_FORECASTS,
    TABLE_GBM_RUNS,
    stored_list,
)
from schemas.runtime.cassandra import driver_errors as _driver_errors

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from cassandra.cluster import Session
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

__all__ = [
    "BarRows",
    "GbmStore",
    "days_between",
    "new_run_id",
    "to_utc",
]

logger = logging.getLogger(__name__)


def to_utc(value: datetime) -> datetime:
    """The driver returns naive UTC datetimes; make them aware (naive input is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_run_id(at: datetime) -> str:
    """The id of a forecast run or a backtest: its UTC time to the second, then 8 random hex
    digits (two runs in one second do not collide), so ids sort by time.

    >>> new_run_id(datetime(2026, 1, 5, 13, 0, 7, tzinfo=UTC))[:17]
    '20260105T130007Z-'
    """
    return f"{to_utc(at):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def days_between(start: datetime, end: datetime) -> list[date]:
    """UTC dates from ``start`` to ``end`` inclusive.

    >>> days_between(datetime(2024, 1, 1, 23, tzinfo=UTC), datetime(2024, 1, 2, 1, tzinfo=UTC))
    [datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)]
    """
    first, last = to_utc(start).date(), to_utc(end).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _nan_to_none(value: Any) -> Any:
    """Driver values made JSON-friendly: NaN -> None, naive UTC datetimes -> aware, Date -> date."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, datetime):
        return to_utc(value)
    if type(value).__name__ == "Date" and hasattr(value, "date"):
        return value.date()
    return value


def _step_row(row: dict[str, Any]) -> dict[str, Any]:
    """A ``gbm_forecasts`` row with its 99 percentiles under ``percentiles``, whichever column
    stored them (the frozen one since migration 010)."""
    percentiles = stored_list(row, PERCENTILES, PERCENTILES_BEFORE_010)
    return {**{k: v for k, v in row.items() if k != PERCENTILES}, "percentiles": percentiles}


@dataclass(frozen=True)
class BarRows:
    """5-second bars read for the backtest, and how many rows were left out as unusable."""

    frame: pd.DataFrame
    n_unusable: int


def _usable_bar(row: Any) -> bool:
    close = row.close
    return (
        row.window_start is not None
        and row.window_end is not None
        and isinstance(close, int | float)
        and math.isfinite(close)
        and close > 0
    )


def _closed_rows(rows: Iterable[Any], end_ms: float) -> tuple[FloatArray, FloatArray]:
    """Starts (epoch seconds) and closes of the result rows ``(ws, we, close)`` (epoch ms)
    that have a ``window_end`` and a ``close`` and have closed by ``end_ms``."""
    import numpy as np

    starts, closes = [], []
    for ws, we, close in rows:
        if we is not None and close is not None and we <= end_ms:
            starts.append(ws / 1000.0)
            closes.append(close)
    return np.array(starts, dtype=np.float64), np.array(closes, dtype=np.float64)


def _closed_columns(page: dict[str, Any], end_ms: float) -> tuple[FloatArray, FloatArray]:
    """:func:`_closed_rows` of a page of the driver's numpy parser: a (masked, where null)
    array per column."""
    import numpy as np

    we, close = page["we"], page["close"]
    keep = ~np.ma.getmaskarray(we) & ~np.ma.getmaskarray(close)
    keep &= np.ma.getdata(we) <= end_ms
    starts = np.ma.getdata(page["ws"])[keep] / 1000.0
    return starts.astype(np.float64), np.ma.getdata(close)[keep].astype(np.float64)


def _storage(what: str, exc: Exception) -> StorageError:
    return StorageError(f"cassandra {what} failed: {type(exc).__name__}: {exc}")


class GbmStore:
    """Driver-side reads and writes of the GBM tables in one keyspace.

    :param session: a connected cassandra-driver session (``schemas.runtime.cassandra.connect``)
    :param keyspace: keyspace holding the bars and the GBM tables
    """

    def __init__(self, session: Session, keyspace: str) -> None:
        self.session = session
        self.keyspace = keyspace
        self._columns: tuple[Session, Any] | None = None

    def _execute(self, what: str, query: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(self.session.execute(query, params))
        except _driver_errors() as exc:
            raise _storage(what, exc) from exc

    # --- bars ---------------------------------------------------------------------------

    def bar_partitions(
        self, days: Iterable[date], table: str = TABLE_AGG_5S
    ) -> list[tuple[str, date]]:
        """(symbol, day) partitions of the bars in ``table`` (the 5-second bars unless told)
        on the given days."""
        wanted = set(days)
        rows = self._execute(
            f"{table} partitions", f"SELECT DISTINCT symbol, day FROM {self.keyspace}.{table}"
        )
        out = []
        for row in rows:
            day = row.day.date() if hasattr(row.day, "date") else row.day
            if isinstance(day, date) and day in wanted:
                out.append((row.symbol, day))
        return sorted(out)

    def read_closes(
        self, partitions: Sequence[tuple[str, date]], start: datetime, end: datetime
    ) -> dict[str, tuple[FloatArray, FloatArray]]:
        """The forecast run's input: per symbol, the start (epoch seconds) and close of every bar
        with ``start <= window_start < end`` that has closed by ``end`` (``window_end <= end``),
        in the given (symbol, day) partitions, read concurrently. A row without a
        ``window_end`` or a ``close`` is left out here; a bad close is the model's to count.

        Times come back as epoch milliseconds (``toUnixTimestamp``), and, where the driver was
        built with its numpy parser, each partition's rows as numpy columns on a session of
        the same cluster (:meth:`_column_session`) instead of a Python tuple per bar: 216,000
        bars took 0.55-0.65 s of CPU as rows and 0.11-0.14 s as columns."""
        import numpy as np
        from cassandra.cluster import EXEC_PROFILE_DEFAULT
        from cassandra.concurrent import execute_concurrent_with_args

        columns = self._column_session()
        session = columns[0] if columns else self.session
        try:
            statement = session.prepare(
                "SELECT toUnixTimestamp(window_start) AS ws, toUnixTimestamp(window_end) AS we, "
                f"close FROM {self.keyspace}.{TABLE_AGG_5S} WHERE symbol = ? AND day = ? "
                "AND window_start >= ? AND window_start < ?"
            )
        except _driver_errors() as exc:
            raise _storage("prepare bar read", exc) from exc
        statement.fetch_size = 50_000
        params = [(symbol, day, start, end) for symbol, day in partitions]
        end_ms = to_utc(end).timestamp() * 1000.0
        parts: dict[str, list[tuple[FloatArray, FloatArray]]] = {}
        try:
            results = execute_concurrent_with_args(
                session,
                statement,
                params,
                concurrency=32,
                raise_on_first_error=True,
                execution_profile=columns[1] if columns else EXEC_PROFILE_DEFAULT,
            )
            for (symbol, _day), (_ok, rows) in zip(partitions, results, strict=True):
                pieces = parts.setdefault(symbol, [])
                if columns:
                    pieces.extend(_closed_columns(page, end_ms) for page in rows)
                else:
                    pieces.append(_closed_rows(rows, end_ms))
        except _driver_errors() as exc:
            raise _storage("read bars", exc) from exc
        empty = np.empty(0, dtype=np.float64)
        return {
            symbol: (
                np.concatenate([empty, *(s for s, _ in pieces)]),
                np.concatenate([empty, *(c for _, c in pieces)]),
            )
            for symbol, pieces in parts.items()
        }

    def _column_session(self) -> tuple[Session, Any] | None:
        """A second session of this store's cluster whose results are numpy columns, and the
        execution profile its reads need (tuple rows: the parser's page, a dict of column
        arrays, passed through); None when the driver has no numpy parser. Opened on first
        use and kept; ``cluster.shutdown()`` closes it with the store's session."""
        from cassandra.cluster import EXEC_PROFILE_DEFAULT
        from cassandra.protocol import NumpyProtocolHandler
        from cassandra.query import tuple_factory

        if NumpyProtocolHandler is None:
            return None
        if self._columns is None:
            try:
                session = self.session.cluster.connect()
            except _driver_errors() as exc:
                raise _storage("connect a column session", exc) from exc
            session.client_protocol_handler = NumpyProtocolHandler
            profile = self.session.execution_profile_clone_update(
                EXEC_PROFILE_DEFAULT, row_factory=tuple_factory
            )
            self._columns = (session, profile)
        return self._columns

    def read_bars(self, symbol: str, start: datetime, end: datetime) -> BarRows:
        """Bars of one symbol with ``start <= window_start < end``, oldest first; columns
        ``window_start`` (epoch seconds), ``window_end`` (epoch seconds), ``close``.

        A row another tool, an older version or a partial write left without a ``window_end``
        or a positive finite ``close`` cannot give a realised price: it is left out, counted in
        :attr:`BarRows.n_unusable` and named in one WARNING line per symbol.
        """
        import pandas as pd

        rows: list[Any] = []
        for day in days_between(start, end):
            rows.extend(
                self._execute(
                    f"read bars {symbol} {day}",
                    f"SELECT window_start, window_end, close FROM {self.keyspace}.{TABLE_AGG_5S} "
                    "WHERE symbol = %s AND day = %s AND window_start >= %s AND window_start < %s",
                    (symbol, day, start, end),
                )
            )
        usable = [r for r in rows if _usable_bar(r)]
        n_unusable = len(rows) - len(usable)
        if n_unusable:
            logger.warning(
                "%s: skipped %d of %d 5-second bar rows between %s and %s with a null window_end "
                "or a null, non-finite or non-positive close (not a usable price)",
                symbol,
                n_unusable,
                len(rows),
                to_utc(start).isoformat(),
                to_utc(end).isoformat(),
            )
        frame = pd.DataFrame(
            {
                "window_start": [to_utc(r.window_start).timestamp() for r in usable],
                "window_end": [to_utc(r.window_end).timestamp() for r in usable],
                "close": [float(r.close) for r in usable],
            },
            columns=["window_start", "window_end", "close"],
        )
        frame = frame.sort_values("window_start", kind="stable").reset_index(drop=True)
        return BarRows(frame=frame, n_unusable=n_unusable)

    # --- runs ---------------------------------------------------------------------------

    def write_run(
        self,
        *,
        run_id: str,
        issued_at: datetime,
        seed: int,
        settings: GbmSettings,
        n_symbols: int,
        n_ok: int,
        n_skipped: int,
        duration_s: float,
    ) -> None:
        self._execute(
            f"write run {run_id}",
            f"INSERT INTO {self.keyspace}.{TABLE_GBM_RUNS} (day, issued_at, run_id, seed, "
            "settings, n_symbols, n_ok, n_skipped, duration_s) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                to_utc(issued_at).date(),
                issued_at,
                run_id,
                seed,
                json.dumps(asdict(settings), sort_keys=True),
                n_symbols,
                n_ok,
                n_skipped,
                duration_s,
            ),
        )

    def write_skipped(
        self,
        *,
        symbol: str,
        run_id: str,
        issued_at: datetime,
        seed: int,
        models: Sequence[str],
        status: str,
        message: str,
    ) -> None:
        """Record that a requested symbol had no bars at all, so the API can say why."""
        for model in models:
            self._execute(
                f"write skipped {symbol}",
                f"INSERT INTO {self.keyspace}.{TABLE_GBM_FORECAST_RUNS} (symbol, day, issued_at, "
                "run_id, model, status, message, seed, n_bars) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,0)",
                (symbol, to_utc(issued_at).date(), issued_at, run_id, model, status, message, seed),
            )

    def complete_runs(self, day: date) -> set[tuple[datetime, str]]:
        """``(issued_at, run_id)`` of the runs issued on ``day`` (UTC) that finished writing.

        A run writes its ``gbm_runs`` row last, after every forecast row, so a run without one
        was killed mid-write (or is still writing) and may be missing symbols, models or steps.
        """
        rows = self._execute(
            f"complete runs {day}",
            f"SELECT issued_at, run_id FROM {self.keyspace}.{TABLE_GBM_RUNS} WHERE day = %s",
            (day,),
        )
        return {(to_utc(r.issued_at), r.run_id) for r in rows}

    def latest_runs(self, symbol: str, *, days_back: int, now: datetime) -> list[dict[str, Any]]:
        """Rows of the newest complete run (see :meth:`complete_runs`) that covered ``symbol``
        (one per model), searching back ``days_back`` days; empty when there is none."""
        for day in reversed(days_between(now - timedelta(days=days_back), now)):
            rows = self._execute(
                f"latest run {symbol}",
                f"SELECT * FROM {self.keyspace}.{TABLE_GBM_FORECAST_RUNS} "
                "WHERE symbol = %s AND day = %s",
                (symbol, day),
            )
            if not rows:
                continue
            complete = self.complete_runs(day)
            # rows come newest run first (clustering order): the first complete one wins
            first = next((r for r in rows if (to_utc(r.issued_at), r.run_id) in complete), None)
            if first is not None:
                same = [r for r in rows if r.run_id == first.run_id]
                return [{k: _nan_to_none(v) for k, v in r._asdict().items()} for r in same]
        return []

    def forecast_steps(
        self, symbol: str, day: date, issued_at: datetime, run_id: str
    ) -> list[dict[str, Any]]:
        rows = self._execute(
            f"forecast steps {symbol}",
            f"SELECT * FROM {self.keyspace}.{TABLE_GBM_FORECASTS} "
            "WHERE symbol = %s AND day = %s AND issued_at = %s AND run_id = %s",
            (symbol, day, issued_at, run_id),
        )
        return [{k: _nan_to_none(v) for k, v in _step_row(r._asdict()).items()} for r in rows]

    # --- backtest -----------------------------------------------------------------------

    def forecast_partitions(self) -> list[tuple[str, date]]:
        rows = self._execute(
            "forecast partitions",
            f"SELECT DISTINCT symbol, day FROM {self.keyspace}.{TABLE_GBM_FORECASTS}",
        )
        return sorted((r.symbol, r.day.date() if hasattr(r.day, "date") else r.day) for r in rows)

    def iter_forecasts(self, partitions: Sequence[tuple[str, date]]) -> Iterator[pd.DataFrame]:
        """Forecast steps partition by partition (logs progress), as DataFrames."""
        import pandas as pd

        cols = (
            "symbol, day, issued_at, run_id, model, step, target_ts, horizon_s, as_of, "
            f"last_price, {PERCENTILES}, {PERCENTILES_BEFORE_010}"
        )
        for i, (symbol, day) in enumerate(partitions, start=1):
            rows = self._execute(
                f"read forecasts {symbol} {day}",
                f"SELECT {cols} FROM {self.keyspace}.{TABLE_GBM_FORECASTS} "
                "WHERE symbol = %s AND day = %s",
                (symbol, day),
            )
            logger.info(
                "[%d/%d] read %d forecast steps of %s on %s",
                i,
                len(partitions),
                len(rows),
                symbol,
                day,
            )
            frame = pd.DataFrame([_step_row(r._asdict()) for r in rows])
            if not frame.empty:
                for col in ("issued_at", "target_ts", "as_of"):
                    frame[col] = pd.to_datetime(frame[col], utc=True)
                yield frame

    def write_backtest(
        self, rows: pd.DataFrame, *, backtest_id: str, evaluated_at: datetime
    ) -> int:
        """Upsert the rows of :func:`gbm_analysis.backtest.summarise_scores`."""
        from cassandra.concurrent import execute_concurrent_with_args

        cols = [
            "horizon_s",
            "n",
            "n_pending",
            "n_gap",
            "n_expired",
            "cover50",
            "cover50_lo",
            "cover50_hi",
            "kupiec50_p",
            "cover90",
            "cover90_lo",
            "cover90_hi",
            "kupiec90_p",
            "pinball_bps",
            "crps_bps",
            "crps_baseline_bps",
            "crps_skill",
            "n_paired",
            "first_issued",
            "last_issued",
        ]
        key = ["symbol", "day", "evaluated_at", "backtest_id", "model", "step"]
        try:
            statement = self.session.prepare(
                f"INSERT INTO {self.keyspace}.{TABLE_GBM_BACKTEST} ({', '.join(key + cols)}) "
                f"VALUES ({', '.join('?' * len(key + cols))})"
            )
        except _driver_errors() as exc:
            raise _storage(f"prepare backtest insert {backtest_id}", exc) from exc
        day = to_utc(evaluated_at).date()
        params = []
        for rec in rows.to_dict("records"):
            values = [rec["symbol"], day, evaluated_at, backtest_id, rec["model"], int(rec["step"])]
            for col in cols:
                value = rec[col]
                if hasattr(value, "to_pydatetime"):
                    value = value.to_pydatetime()
                elif col in ("horizon_s", "n", "n_pending", "n_gap", "n_expired", "n_paired"):
                    value = int(value)
                values.append(value)
            params.append(values)
        try:
            results = execute_concurrent_with_args(
                self.session, statement, params, concurrency=16, raise_on_first_error=True
            )
        except _driver_errors() as exc:
            raise _storage(f"write backtest {backtest_id}", exc) from exc
        return len(results)

    def latest_backtest(
        self, symbol: str, *, days_back: int, now: datetime
    ) -> list[dict[str, Any]]:
        """Rows of the newest backtest that scored ``symbol``; empty when there is none."""
        for day in reversed(days_between(now - timedelta(days=days_back), now)):
            rows = self._execute(
                f"latest backtest {symbol}",
                f"SELECT * FROM {self.keyspace}.{TABLE_GBM_BACKTEST} "
                "WHERE symbol = %s AND day = %s LIMIT 1",
                (symbol, day),
            )
            if rows:
                rows = self._execute(
                    f"latest backtest {symbol}",
                    f"SELECT * FROM {self.keyspace}.{TABLE_GBM_BACKTEST} "
                    "WHERE symbol = %s AND day = %s AND evaluated_at = %s AND backtest_id = %s",
                    (symbol, day, rows[0].evaluated_at, rows[0].backtest_id),
                )
                return [{k: _nan_to_none(v) for k, v in r._asdict().items()} for r in rows]
        return []
