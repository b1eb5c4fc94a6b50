"""The explorer's Vega-Lite charts (the fan, the terminal distribution, P(above)), built from the
same frames as the Plotly ones: what each layer draws, and that the specs are valid Vega-Lite."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from dashboards.forecasts import fan_frame, paths_frame
from dashboards.vega_charts import fan_charts, layer_names, p_above_chart, terminal_chart
from dashboards.what_if import StoredModel, WhatIf, what_if_forecast
from tests.dashboards.test_forecasts import AS_OF, forecasts


def _fan_inputs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    fan = fan_frame(pd.concat([forecasts("gbm", 100.0), forecasts("ewma_t", 100.0)]))
    candles = pd.DataFrame(
        {
            "window_start": [AS_OF - timedelta(seconds=10), AS_OF - timedelta(seconds=5)],
            "window_end": [AS_OF - timedelta(seconds=5), AS_OF],
            "open": [99.0, 100.0],
            "high": [101.0, 100.5],
            "low": [90.0, 99.5],
            "close": [100.0, 99.8],
        }
    )
    realised = pd.DataFrame({"time": [AS_OF + timedelta(seconds=5)], "close": [100.5]})
    paths = paths_frame(
        pd.DataFrame(
            [
                {
                    "model": "gbm",
                    "path": 0,
                    "as_of": AS_OF,
                    "step_seconds": 5,
                    "prices": [101.0, 120.0, 103.0],
                    "last_price": 100.0,
                }
            ]
        )
    )
    return fan, candles, realised, paths


def test_one_fan_per_model_in_order_on_one_price_range() -> None:
    fan, candles, realised, paths = _fan_inputs()
    # left to right in the order of the fan's rows (the app puts model A first)
    gbm_first = pd.concat([fan[fan["model"] == "gbm"], fan[fan["model"] != "gbm"]])
    charts = fan_charts(gbm_first, candles=candles, realised=realised, paths=paths)
    assert list(charts) == ["gbm", "ewma_t"]
    assert list(fan_charts(fan, candles=candles, realised=realised, paths=paths)) == [
        "ewma_t",
        "gbm",
    ]
    for model, chart in charts.items():
        spec = chart.to_dict()  # validates against the Vega-Lite schema
        assert spec["title"] == model and spec["description"] == f"fan {model}"
        names = layer_names(chart)
        assert [n for n in names if "|q" in n] == [
            f"{model}|q05-q95",
            f"{model}|q25-q75",
            f"{model}|q50",
        ]
        assert {f"{model}|candles", f"{model}|realised", f"{model}|hover"} <= set(names)
        assert (f"{model}|path" in names) == (model == "gbm")  # ewma_t has no stored paths here
        (median,) = [layer for layer in spec["layer"] if layer["description"] == f"{model}|q50"]
        # every panel spans the lowest candle (90) to the highest path price (120), padded
        low, high = median["encoding"]["y"]["scale"]["domain"]
        assert low < 90.0 < 120.0 < high
    # a zoom per panel, each under its own name: Vega refuses a repeated signal
    params = [p["name"] for c in charts.values() for p in c.to_dict()["params"]]
    assert params == ["zoom_0", "zoom_1"]


def test_what_if_adds_dashed_quantiles_and_paths_to_its_model() -> None:
    fan, candles, realised, paths = _fan_inputs()
    base = StoredModel(
        symbol="X",
        model="gbm",
        as_of=AS_OF,
        last_price=100.0,
        mu=0.0,
        sigma=1e-4,
        dof=None,
        step_seconds=5,
        n_steps=3,
        n_paths=200,
        seed=1,
    )
    sim = what_if_forecast(
        base,
        WhatIf(sigma_multiplier=1.0, drift_pct_per_day=0.0, n_steps=3, n_paths=200, seed=1),
    )
    charts = fan_charts(fan, candles=candles, realised=realised, paths=paths, what_if={"gbm": sim})
    names = layer_names(charts["gbm"])
    assert [n for n in names if "what-if" in n] == [
        "gbm|what-if path",
        "gbm|what-if q05",
        "gbm|what-if q50",
        "gbm|what-if q95",
    ]
    assert not [n for n in layer_names(charts["ewma_t"]) if "what-if" in n]


def test_terminal_and_p_above_charts_hold_every_model() -> None:
    fan, _, _, _ = _fan_inputs()
    hist = pd.DataFrame({"lo": [99.0, 100.0], "hi": [100.0, 101.0], "paths": [1, 3]}).assign(
        share=[0.25, 0.75], density=[0.25, 0.75]
    )
    density = pd.DataFrame({"price": [99.5, 100.5], "density": [0.3, 0.7]})
    terminal = terminal_chart({"gbm": hist}, {"gbm": density}, last_price=100.0)
    spec = terminal.to_dict()
    assert spec["description"] == "terminal"
    assert layer_names(terminal) == ["histogram", "density", "last price"]
    p_above = p_above_chart(fan)
    assert p_above.to_dict()["description"] == "p_above"
    assert layer_names(p_above) == ["p_above", "half"]
    (rows,) = [v for v in p_above.to_dict()["datasets"].values() if v and "p_above" in v[0]]
    assert {r["series"] for r in rows} == {"gbm", "ewma_t"}
    assert len(rows) == len(fan[fan["step"] > 0])
