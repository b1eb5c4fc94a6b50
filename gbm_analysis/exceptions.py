"""Errors raised by the GBM analysis package.

The tree::

    GbmError                      root; every error here carries a one-line, user-facing message
    ├── ConfigError               a GBM_* setting or CLI option has a value we cannot use
    ├── DataError                 the bars of one symbol cannot be modelled (skipped, not a crash)
    │   ├── InsufficientDataError too few bars or returns in the lookback window
    │   ├── DegenerateDataError   the price never moves (sigma = 0)
    │   └── InvalidDataError      NaN, infinite or non-positive prices after cleaning
    ├── UnknownSymbolError        no forecast or bars exist for the requested symbol
    └── StorageError              Cassandra could not be read or written (wraps the driver error)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DegenerateDataError",
    "GbmError",
    "InsufficientDataError",
    "InvalidDataError",
    "StorageError",
    "UnknownSymbolError",
]


class GbmError(Exception):
    """Root of every error raised by :mod:`gbm_analysis`."""


class ConfigError(GbmError, ValueError):
    """A setting has a value we cannot use; the message names the setting and the value."""


class DataError(GbmError):
    """The bars of one symbol cannot be modelled; the job records the reason and moves on."""

    #: short machine-readable status stored with the skipped forecast
    status = "invalid_data"


class InsufficientDataError(DataError):
    """Too few bars (or returns) to estimate anything."""

    status = "too_few_bars"


class DegenerateDataError(DataError):
    """The price is constant over the window, so sigma would be 0."""

    status = "constant_price"


class InvalidDataError(DataError):
    """Prices are NaN, infinite or not positive."""

    status = "invalid_data"


class UnknownSymbolError(GbmError, LookupError):
    """No forecast or bars exist for the requested symbol."""


class StorageError(GbmError):
    """Cassandra could not be read or written."""
