"""Drift of recent 1-minute bars against a model's training window. Pure except the writers.

Per symbol and feature (the 1-minute log return, its absolute value, the bar's range
``log(high / low)`` and its log volume), two statistics compare the recent bars with the training
window's:

* the **population-stability index**, ``PSI = sum((p_new - p_ref) * ln(p_new / p_ref))`` over the
  training window's deciles (shares floored at 1e-4 so an empty bin stays finite); the usual
  reading is < 0.1 stable, 0.1-0.25 moderate, > 0.25 a shift; ``GBM_DRIFT_PSI`` (0.25) is the
  threshold;
* the two-sample **Kolmogorov-Smirnov** test (scipy), drift when its p-value is below 0.01.

Minute returns are serially dependent in volatility, so the KS p-value overstates significance on
long windows; the PSI threshold alone triggers a retrain (:func:`retrain_symbols`: a symbol is
retrained when any feature of any of its production models has ``PSI >= threshold``). The checks
show on both dashboards (the Streamlit explorer's drift table, Superset's drift chart) and as the
Prometheus gauges of :func:`drift_registry`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from gbm_analysis.learned import BPS

if TYPE_CHECKING:
    import pandas as pd
    from prometheus_client import CollectorRegistry

__all__ = [
    "DriftResult",
    "check_drift",
    "drift_features",
    "drift_registry",
    "population_stability_index",
    "retrain_symbols",
]

FloatArray = NDArray[np.float64]
PSI_THRESHOLD = 0.25
KS_ALPHA = 0.01
_FLOOR = 1e-4


def population_stability_index(reference: FloatArray, recent: FloatArray, bins: int = 10) -> float:
    """PSI of ``recent`` against ``reference``'s quantile bins.

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=5000), rng.normal(size=5000)
    >>> population_stability_index(a, b) < 0.02 < population_stability_index(a, b * 2)
    True
    """
    ref = reference[np.isfinite(reference)]
    new = recent[np.isfinite(recent)]
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    p_ref = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    p_new = np.bincount(np.searchsorted(edges, new, side="right"), minlength=edges.size + 1)
    p_ref = np.maximum(p_ref / ref.size, _FLOOR)
    p_new = np.maximum(p_new / new.size, _FLOOR)
    return float(np.sum((p_new - p_ref) * np.log(p_new / p_ref)))


def drift_features(minutes: pd.DataFrame) -> dict[str, FloatArray]:
    """The monitored features of gap-free 1-minute bars (:func:`prepare_minutes`)."""
    close = minutes["close"].to_numpy(dtype=np.float64)
    ret = np.diff(np.log(close)) * BPS
    rng = np.log(minutes["high"].to_numpy(np.float64) / minutes["low"].to_numpy(np.float64)) * BPS
    return {
        "return": ret,
        "abs_return": np.abs(ret),
        "range": rng,
        "log_volume": np.log1p(minutes["volume"].to_numpy(dtype=np.float64)),
    }


@dataclass(frozen=True)
class DriftResult:
    symbol: str
    model: str
    feature: str
    psi: float
    ks_stat: float
    ks_p: float
    threshold: float
    n_reference: int
    n_recent: int

    @property
    def drifted(self) -> bool:
        """Either test says the feature moved (shown; the KS test alone triggers nothing)."""
        return self.psi >= self.threshold or self.ks_p < KS_ALPHA

    @property
    def psi_exceeded(self) -> bool:
        """The PSI is past the threshold: this result triggers a retrain of its symbol."""
        return self.psi >= self.threshold


def retrain_symbols(results: Iterable[DriftResult]) -> list[str]:
    """Symbols to retrain: those with a result whose PSI is past its threshold.

    >>> from dataclasses import replace
    >>> r = DriftResult("S", "mlp", "return", 0.3, 0.1, 1e-9, 0.25, 100, 100)
    >>> retrain_symbols([r, replace(r, symbol="T", psi=0.1)])  # T: KS only, not retrained
    ['S']
    """
    return sorted({r.symbol for r in results if r.psi_exceeded})


def check_drift(
    symbol: str,
    model: str,
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    *,
    threshold: float = PSI_THRESHOLD,
) -> list[DriftResult]:
    """One result per feature: recent 1-minute bars against the training window's."""
    ref, new = drift_features(reference), drift_features(recent)
    out = []
    for name in ref:
        a, b = ref[name], new[name]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size < 20 or b.size < 20:
            continue
        ks = stats.ks_2samp(a, b)
        out.append(
            DriftResult(
                symbol=symbol,
                model=model,
                feature=name,
                psi=population_stability_index(a, b),
                ks_stat=float(ks.statistic),
                ks_p=float(ks.pvalue),
                threshold=threshold,
                n_reference=int(a.size),
                n_recent=int(b.size),
            )
        )
    return out


def drift_registry(
    results: list[DriftResult], retrained: Collection[str] = ()
) -> CollectorRegistry:
    """Prometheus gauges of the latest check: ``forecast_drift_psi`` and ``forecast_drift_ks_p``
    per symbol, model and feature, ``forecast_drift_detected`` (0/1) per symbol and model, and
    ``forecast_drift_retrain`` (0/1) per symbol checked: 1 when the check triggered a retrain."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    labels = ["symbol", "model", "feature"]
    psi = Gauge(
        "forecast_drift_psi", "PSI of recent bars vs the training window", labels, registry=registry
    )
    ks_p = Gauge(
        "forecast_drift_ks_p",
        "KS p-value, recent bars vs training window",
        labels,
        registry=registry,
    )
    detected = Gauge(
        "forecast_drift_detected",
        "1 when any feature drifted",
        ["symbol", "model"],
        registry=registry,
    )
    flags: dict[tuple[str, str], bool] = {}
    for r in results:
        psi.labels(r.symbol, r.model, r.feature).set(r.psi)
        ks_p.labels(r.symbol, r.model, r.feature).set(r.ks_p if math.isfinite(r.ks_p) else 1.0)
        flags[(r.symbol, r.model)] = flags.get((r.symbol, r.model), False) or r.drifted
    for (symbol, model), flag in flags.items():
        detected.labels(symbol, model).set(1.0 if flag else 0.0)
    retrain = Gauge(
        "forecast_drift_retrain",
        "1 when the latest drift check triggered a retrain of the symbol",
        ["symbol"],
        registry=registry,
    )
    for symbol in sorted({r.symbol for r in results} | set(retrained)):
        retrain.labels(symbol).set(1.0 if symbol in retrained else 0.0)
    return registry
