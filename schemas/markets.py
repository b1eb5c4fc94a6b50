"""Which market a symbol trades on, and how that market annualises a volatility.

Finnhub names crypto and FX pairs ``EXCHANGE:PAIR`` (``BINANCE:BTCUSDT``, ``OANDA:EUR_USD``) and
US stocks by their ticker (``AAPL``). A volatility per second of *trading* time (the GBM job takes
no return across a closed market) is annualised over the seconds the market trades in a year:

* crypto trades around the clock: 365 days x 24 h;
* FX trades around the clock on weekdays: 260 days x 24 h;
* exchange-traded stocks trade 252 sessions of 6.5 h a year (the usual equity convention).

Scaling a stock's sigma by calendar seconds instead (365.25 d x 24 h) shows it 2.3 times too
large next to the figures every equity desk quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CONVENTIONS",
    "CRYPTO_EXCHANGES",
    "FX_EXCHANGES",
    "Annualisation",
    "Market",
    "annualisation_for",
    "market_of",
]

Market = Literal["crypto", "fx", "equity"]

#: Finnhub exchange prefixes of crypto pairs
CRYPTO_EXCHANGES = frozenset(
    {
        "BINANCE",
        "COINBASE",
        "KRAKEN",
        "BITFINEX",
        "BITSTAMP",
        "GEMINI",
        "HUOBI",
        "KUCOIN",
        "OKX",
        "BYBIT",
        "POLONIEX",
        "BITTREX",
    }
)
#: Finnhub exchange prefixes of FX pairs
FX_EXCHANGES = frozenset({"OANDA", "FXCM", "FOREXCOM", "ICMTRADER", "FXPRO", "PEPPERSTONE"})


@dataclass(frozen=True)
class Annualisation:
    """Trading days a year and trading hours a day of one market.

    >>> a = Annualisation(252, 6.5)
    >>> a.label, a.seconds_per_year
    ('252 d x 6.5 h', 5896800.0)
    """

    days_per_year: float
    hours_per_day: float

    @property
    def seconds_per_year(self) -> float:
        return self.days_per_year * self.hours_per_day * 3600.0

    @property
    def label(self) -> str:
        return f"{self.days_per_year:g} d x {self.hours_per_day:g} h"

    def annualise(self, sigma_per_second: float) -> float:
        """Volatility per second of trading time -> per year of trading time."""
        return sigma_per_second * math.sqrt(self.seconds_per_year)


CONVENTIONS: dict[Market, Annualisation] = {
    "crypto": Annualisation(365, 24),
    "fx": Annualisation(260, 24),
    "equity": Annualisation(252, 6.5),
}


def market_of(symbol: str) -> Market:
    """The market of a Finnhub symbol: its exchange prefix, else a stock.

    >>> market_of("BINANCE:BTCUSDT"), market_of("oanda:EUR_USD"), market_of("AAPL")
    ('crypto', 'fx', 'equity')
    """
    exchange, sep, _ = symbol.partition(":")
    if sep and exchange.upper() in CRYPTO_EXCHANGES:
        return "crypto"
    if sep and exchange.upper() in FX_EXCHANGES:
        return "fx"
    return "equity"


def annualisation_for(symbol: str) -> Annualisation:
    """The annualisation convention of ``symbol``'s market.

    >>> annualisation_for("AAPL").label, annualisation_for("BINANCE:ETHUSDT").label
    ('252 d x 6.5 h', '365 d x 24 h')
    """
    return CONVENTIONS[market_of(symbol)]
