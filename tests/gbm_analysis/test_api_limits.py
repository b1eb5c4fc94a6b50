"""The API's limits (issue 12 item 15): generic 503 with a request id, bounded symbols, a cache and
a rate limit on store reads. A fake store counts the reads; no Cassandra needed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gbm_analysis.api import create_app
from gbm_analysis.exceptions import StorageError

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
LEAKY = (
    "cassandra latest run X failed: NoHostAvailable: ('Unable to connect to any servers', "
    "{'127.0.0.1:9042': ConnectionRefusedError(111)}) keyspace market"
)


class FakeStore:
    """Answers with no forecast and no backtest (404), counting each read; or fails."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.reads = 0

    def _read(self) -> list[Any]:
        self.reads += 1
        if self.error:
            raise StorageError(self.error)
        return []

    def latest_runs(self, symbol: str, *, days_back: int, now: datetime) -> list[Any]:
        return self._read()

    def latest_backtest(self, symbol: str, *, days_back: int, now: datetime) -> list[Any]:
        return self._read()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def client(store: FakeStore, **kwargs: Any) -> TestClient:
    return TestClient(create_app(store, clock=lambda: NOW, **kwargs))  # type: ignore[arg-type]


def test_503_is_generic_with_a_request_id_and_the_details_only_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="gbm_analysis.api"):
        response = client(FakeStore(error=LEAKY)).get("/forecast/AAPL")
    assert response.status_code == 503
    body = response.json()
    request_id = body["request_id"]
    assert len(request_id) == 32 and response.headers["X-Request-ID"] == request_id
    assert body == {
        "detail": "the forecast store is unavailable; try again later",
        "request_id": request_id,
    }
    # The random request id may hold "9042" by chance: look at the answer without it.
    answer = response.text.replace(request_id, "")
    for leak in ("127.0.0.1", "9042", "market", "NoHostAvailable"):
        assert leak not in answer
    assert any(
        request_id in r.getMessage() and "NoHostAvailable" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    "path",
    [
        "/forecast/" + "A" * 33,
        "/forecast/AA PL",
        "/forecast/a;b",
        "/forecast/%F0%9F%92%A5",
        "/backtest/" + "B" * 33,
        "/backtest/**",
        "/forecast/*",
    ],
)
def test_symbols_outside_the_format_are_refused_before_any_read(path: str) -> None:
    store = FakeStore()
    response = client(store).get(path)
    assert response.status_code == 422
    assert store.reads == 0


@pytest.mark.parametrize(
    "path",
    [
        "/forecast/BINANCE:BTCUSDT",
        "/forecast/BRK.B",
        "/forecast/OANDA:EUR_USD",
        "/backtest/*",
        "/backtest/AAPL",
    ],
)
def test_well_formed_symbols_are_looked_up(path: str) -> None:
    store = FakeStore()
    assert client(store).get(path).status_code == 404
    assert store.reads == 1


def test_repeated_requests_within_the_ttl_read_the_store_once() -> None:
    store, clock = FakeStore(), Clock()
    api = client(store, cache_ttl_s=5.0, timer=clock)
    for _ in range(10):
        assert api.get("/forecast/AAPL").status_code == 404
        assert api.get("/backtest/AAPL").status_code == 404
    assert store.reads == 2
    clock.t += 5.1
    api.get("/forecast/AAPL")
    assert store.reads == 3


def test_store_reads_are_rate_limited_and_the_rest_get_429() -> None:
    store, clock = FakeStore(), Clock()
    api = client(store, cache_ttl_s=5.0, reads_per_s=4.0, timer=clock)
    codes = [api.get(f"/forecast/S{n}").status_code for n in range(20)]
    assert codes.count(404) == 4 and codes.count(429) == 16
    assert store.reads == 4
    limited = api.get("/forecast/S99")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    clock.t += 1.0  # the bucket refills
    assert api.get("/forecast/S99").status_code == 404


def test_api_limits_are_read_from_the_environment() -> None:
    from gbm_analysis.config import ApiSettings
    from gbm_analysis.exceptions import ConfigError

    settings = ApiSettings.from_env({"GBM_API_CACHE_TTL": "500 ms", "GBM_API_READS_PER_S": "2.5"})
    assert (settings.cache_ttl_s, settings.reads_per_s) == (0.5, 2.5)
    assert (ApiSettings.from_env({}).cache_ttl_s, ApiSettings.from_env({}).reads_per_s) == (5, 20)
    with pytest.raises(ConfigError, match="GBM_API_READS_PER_S='-1'"):
        ApiSettings.from_env({"GBM_API_READS_PER_S": "-1"})
