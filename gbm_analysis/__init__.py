"""Hourly Monte Carlo price forecasts per symbol, their backtest, and an HTTP API.

Modules: ``model`` (pure numpy maths), ``forecast`` (one symbol, every model; pure),
``backtest`` (scoring; pure), ``io`` (Cassandra), ``job`` (the Spark run), ``evaluation`` (the
backtest run), ``api`` (FastAPI), ``config``, ``exceptions``; ``python -m gbm_analysis`` wires them.
"""

from __future__ import annotations

__all__: list[str] = []
