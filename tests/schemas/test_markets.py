"""Markets of symbols and their annualisation conventions."""

from __future__ import annotations

import math

import pytest

from schemas import markets


@pytest.mark.parametrize(
    ("symbol", "market"),
    [
        ("AAPL", "equity"),
        ("BINANCE:BTCUSDT", "crypto"),
        ("coinbase:ETH-USD", "crypto"),
        ("OANDA:EUR_USD", "fx"),
        ("NYSE:IBM", "equity"),
        ("BTCUSDT", "equity"),  # no exchange prefix: Finnhub's stock naming
    ],
)
def test_market_of_a_symbol_follows_its_exchange_prefix(symbol: str, market: str) -> None:
    assert markets.market_of(symbol) == market


def test_a_stocks_annualised_sigma_is_not_scaled_by_calendar_seconds() -> None:
    sigma = 1e-4  # per second of trading
    stock = markets.annualisation_for("AAPL").annualise(sigma)
    calendar = sigma * math.sqrt(365.25 * 86_400)
    assert stock == pytest.approx(sigma * math.sqrt(252 * 6.5 * 3600))
    assert calendar / stock == pytest.approx(2.31, abs=0.01)
    assert markets.annualisation_for("BINANCE:BTCUSDT").annualise(sigma) == pytest.approx(
        sigma * math.sqrt(365 * 86_400)
    )
