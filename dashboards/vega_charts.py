"""Vega-Lite (Altair) charts of the forecast explorer's first screen: the fan, the terminal
distribution and P(above last).

Streamlit draws these with its Vega-Lite component, a 0.8 MB chunk, where a Plotly chart pulls a
4.7 MB one whose evaluation alone takes longer than the page's 2-s budget for its first chart
(docs/benchmarks.md, "Where a Streamlit load's time goes"). The panels further down, shown on
demand, stay Plotly figures (:mod:`dashboards.charts`).

Every chart's rows carry a ``series`` column (``"<model> median"``, ``"realised"``,
``"what-if <model> q50"`` ...), every chart a ``description`` (``"fan <model>"``,
``"terminal"``, ``"p_above"``) and every layer one (``"<model>|q50"``, ``"<model>|candles"`` ...
in a fan; ``"histogram"`` ... otherwise), so a test, or anyone reading the spec, can tell the
layers apart without relying on order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import pandas as pd

from dashboards.charts import REALISED_COLOR, WHAT_IF_COLOR, model_color
from dashboards.what_if import WhatIfResult

__all__ = ["fan_charts", "layer_names", "p_above_chart", "terminal_chart"]

FAN_HEIGHT = 440
#: what Altair's ``.properties`` and ``.configure_*`` of a layered chart are typed to return
Layered = alt.LayerChart | alt.FacetChart
TIME = alt.X("time:T", title="time (UTC)")


def _color_scale(series: list[str]) -> alt.Scale:
    """One colour per legend entry: a model's, what-if red, the realised price black."""
    colors = [
        WHAT_IF_COLOR
        if name.startswith("what-if")
        else REALISED_COLOR
        if name in ("realised", "last price")
        else model_color(name.split(" ")[0])
        for name in series
    ]
    return alt.Scale(domain=series, range=colors)


def _candles(model: str, candles: pd.DataFrame) -> list[alt.Chart]:
    """OHLC candles: a rule from low to high and a bar from open to close, grey shades."""
    frame = candles[["window_start", "window_end", "open", "high", "low", "close"]].assign(
        up=lambda f: f["close"] >= f["open"]
    )
    base = alt.Chart(frame)
    # fill and stroke, not color: the panel's color scale is the legend's
    shades = alt.Scale(domain=[True, False], range=["#7a7a7a", "#b0b0b0"])
    tooltip = [
        alt.Tooltip("window_start:T", title="bar", format="%H:%M:%S"),
        *(alt.Tooltip(f"{c}:Q", format=",.6g") for c in ("open", "high", "low", "close")),
    ]
    wick = base.mark_rule().encode(
        x=alt.X("window_start:T"),
        y=alt.Y("low:Q", scale=alt.Scale(zero=False)),
        y2=alt.Y2("high"),
        stroke=alt.Stroke("up:N", scale=shades, legend=None),
    )
    body = base.mark_bar().encode(
        x=alt.X("window_start:T"),
        x2=alt.X2("window_end"),
        y=alt.Y("open:Q"),
        y2=alt.Y2("close"),
        fill=alt.Fill("up:N", scale=shades, legend=None),
        tooltip=tooltip,
    )
    return [
        wick.properties(description=f"{model}|candles wick"),
        body.properties(description=f"{model}|candles"),
    ]


def _paths(paths: pd.DataFrame, series: str, opacity: float, description: str) -> alt.Chart:
    line = alt.Chart(paths.assign(series=series)).mark_line(strokeWidth=0.7, opacity=opacity)
    return line.encode(
        x=alt.X("time:T"),
        y=alt.Y("price:Q"),
        detail=alt.Detail("path:N"),
        color=alt.Color("series:N"),
    ).properties(description=description)


def _model_panel(
    index: int,
    model: str,
    fan: pd.DataFrame,
    candles: pd.DataFrame,
    realised: pd.DataFrame,
    paths: pd.DataFrame,
    sim: WhatIfResult | None,
    domain: tuple[float, float],
) -> Layered:
    # the legend names what this panel draws, in this model's colour
    scale = _color_scale(
        [
            f"{model} median",
            *([f"{model} paths"] if not paths.empty else []),
            *(["realised"] if not realised.empty else []),
            *(["what-if paths", "what-if q05", "what-if q50", "what-if q95"] if sim else []),
        ]
    )
    layers: list[alt.Chart] = _candles(model, candles) if not candles.empty else []
    if not paths.empty:
        layers.append(
            _paths(paths[["time", "price", "path"]], f"{model} paths", 0.35, f"{model}|path")
        )
    frame = fan[["time", "q05", "q25", "q50", "q75", "q95", "p_above"]].assign(
        series=f"{model} median"
    )
    base = alt.Chart(frame)
    for lo, hi, opacity in (("q05", "q95", 0.15), ("q25", "q75", 0.3)):
        band = base.mark_area(opacity=opacity, color=model_color(model)).encode(
            x=alt.X("time:T"), y=alt.Y(f"{lo}:Q"), y2=alt.Y2(hi)
        )
        layers.append(band.properties(description=f"{model}|{lo}-{hi}"))
    layers.append(
        base.mark_line(strokeWidth=2)
        .encode(
            x=TIME,
            y=alt.Y("q50:Q", title="price", scale=alt.Scale(domain=domain, zero=False)),
            color=alt.Color("series:N", scale=scale),
        )
        .properties(description=f"{model}|q50")
    )
    # hover: a step's quantiles and P(above), from a mark of every step too faint to see
    tooltip = [alt.Tooltip("time:T", format="%H:%M:%S")] + [
        alt.Tooltip(f"{q}:Q", format=",.6g") for q in ("q05", "q25", "q50", "q75", "q95")
    ]
    layers.append(
        base.mark_circle(size=300, opacity=0.001)
        .encode(
            x=alt.X("time:T"),
            y=alt.Y("q50:Q"),
            tooltip=[*tooltip, alt.Tooltip("p_above:Q", title="P(above last)", format=".2f")],
        )
        # drag pans, the wheel zooms the time axis, a double-click resets it; on one layer
        # only, and named per panel: Vega takes each signal name once
        .add_params(alt.selection_interval(name=f"zoom_{index}", bind="scales", encodings=["x"]))
        .properties(description=f"{model}|hover")
    )
    if sim is not None:
        what_if_paths = sim.paths[["time", "price", "path"]]
        layers.append(_paths(what_if_paths, "what-if paths", 0.3, f"{model}|what-if path"))
        for q, dash in (("q05", [2, 2]), ("q50", [6, 3]), ("q95", [2, 2])):
            one = sim.fan[["time", q]].rename(columns={q: "price"}).assign(series=f"what-if {q}")
            layers.append(
                alt.Chart(one)
                .mark_line(strokeWidth=1.5, strokeDash=dash)
                .encode(x=alt.X("time:T"), y=alt.Y("price:Q"), color=alt.Color("series:N"))
                .properties(description=f"{model}|what-if {q}")
            )
    if not realised.empty:
        layers.append(
            alt.Chart(realised[["time", "close"]].assign(series="realised"))
            .mark_line(strokeWidth=2)
            .encode(
                x=alt.X("time:T"),
                y=alt.Y("close:Q"),
                color=alt.Color("series:N"),
                tooltip=[
                    alt.Tooltip("time:T", format="%H:%M:%S"),
                    alt.Tooltip("close:Q", format=",.6g"),
                ],
            )
            .properties(description=f"{model}|realised")
        )
    return alt.layer(*layers).properties(title=model, height=FAN_HEIGHT, description=f"fan {model}")


def fan_charts(
    fan: pd.DataFrame,
    *,
    candles: pd.DataFrame,
    realised: pd.DataFrame,
    paths: pd.DataFrame,
    what_if: Mapping[str, WhatIfResult] | None = None,
) -> dict[str, Layered]:
    """Price history as candles with each model's forecast fan (5-95% and 25-75% bands, median),
    sample paths and the realised price over it: one chart per model, in the order of ``fan``,
    all on the same price range so side by side they compare. Hovering a step shows its
    quantiles and P(above last); drag pans, the wheel zooms the time axis.

    One chart per model, not Vega-Lite's side-by-side ``hconcat``: Altair gives a selection of a
    layered panel in a concatenation to every layer, and Vega rejects the repeated signal.

    :param fan: :func:`dashboards.forecasts.fan_frame` of the models to show
    :param candles: bars (``window_start, window_end, open, high, low, close``)
    :param realised: ``time, close`` since the forecast's as-of time
    :param paths: :func:`dashboards.forecasts.paths_frame` (may be empty)
    :param what_if: per model, a re-simulation to overlay (dashed)
    """
    models = list(dict.fromkeys(fan["model"]))
    what_if = what_if or {}
    domain = _price_range(fan, candles, realised, paths, what_if)
    return {
        model: _model_panel(
            index,
            model,
            fan[fan["model"] == model],
            candles,
            realised,
            paths[paths["model"] == model] if not paths.empty else paths,
            what_if.get(model),
            domain,
        ).configure_legend(orient="bottom", title=None)
        for index, model in enumerate(models)
    }


def _price_range(
    fan: pd.DataFrame,
    candles: pd.DataFrame,
    realised: pd.DataFrame,
    paths: pd.DataFrame,
    what_if: Mapping[str, WhatIfResult],
) -> tuple[float, float]:
    """Lowest and highest price any panel draws, a little padded."""
    values = [fan["q05"], fan["q95"]]
    if not candles.empty:
        values += [candles["low"], candles["high"]]
    if not realised.empty:
        values.append(realised["close"])
    if not paths.empty:
        values.append(paths["price"])
    for sim in what_if.values():
        values += [sim.paths["price"], sim.fan["q05"], sim.fan["q95"]]
    lo = float(min(v.min() for v in values))
    hi = float(max(v.max() for v in values))
    pad = (hi - lo) * 0.03 or abs(hi) * 0.01 or 1.0
    return lo - pad, hi + pad


def terminal_chart(
    histograms: Mapping[str, pd.DataFrame],
    densities: Mapping[str, pd.DataFrame],
    *,
    last_price: float,
    what_if: Mapping[str, WhatIfResult] | None = None,
) -> Layered:
    """Terminal-price histogram (as a density) and the density from the percentiles per model,
    with the last price as a dotted rule."""
    bars = pd.concat(
        [h.assign(series=f"{m} histogram") for m, h in histograms.items()] or [pd.DataFrame()],
        ignore_index=True,
    )
    lines = pd.concat(
        [d.assign(series=f"{m} density") for m, d in densities.items()]
        + [s.density.assign(series=f"what-if {m} density") for m, s in (what_if or {}).items()]
        or [pd.DataFrame()],
        ignore_index=True,
    )
    series = [*bars.get("series", pd.Series(dtype=str)).unique()]
    series += [*lines.get("series", pd.Series(dtype=str)).unique()]
    scale = _color_scale([*dict.fromkeys(series)])
    price = alt.X("price:Q", title="price at the horizon", scale=alt.Scale(zero=False))
    layers: list[alt.Chart] = []
    if not bars.empty:
        layers.append(
            alt.Chart(bars.assign(density=bars["density"].fillna(0)))
            .mark_bar(opacity=0.35, binSpacing=0)
            .encode(
                x=alt.X("lo:Q", title="price at the horizon", scale=alt.Scale(zero=False)),
                x2="hi:Q",
                y=alt.Y("density:Q", title="density (share of paths per unit of price)"),
                y2=alt.datum(0),
                color=alt.Color("series:N", scale=scale),
                tooltip=[
                    "series:N",
                    "lo:Q",
                    "hi:Q",
                    "paths:Q",
                    alt.Tooltip("share:Q", format=".3f"),
                ],
            )
            .properties(description="histogram")
        )
    if not lines.empty:
        dashed = alt.condition(
            "indexof(datum.series, 'what-if') == 0", alt.value([6, 3]), alt.value([1, 0])
        )
        layers.append(
            alt.Chart(lines[["price", "density", "series"]])
            .mark_line(strokeWidth=2)
            .encode(
                x=price,
                y="density:Q",
                color=alt.Color("series:N", scale=scale),
                strokeDash=dashed,
            )
            .properties(description="density")
        )
    layers.append(
        alt.Chart(pd.DataFrame({"price": [last_price], "series": ["last price"]}))
        .mark_rule(strokeDash=[2, 2], color=REALISED_COLOR)
        .encode(x="price:Q", tooltip=[alt.Tooltip("price:Q", title="last price", format=",.6g")])
        .properties(description="last price")
    )
    return (
        alt.layer(*layers)
        .properties(height=340, description="terminal")
        .configure_legend(orient="bottom", title=None)
    )


def p_above_chart(fan: pd.DataFrame, what_if: Mapping[str, WhatIfResult] | None = None) -> Layered:
    """P(price above the last price) per model over the horizon, 0.5 dotted."""
    frames = [
        one.assign(series=str(model))[["time", "p_above", "series"]]
        for model, one in fan[fan["step"] > 0].groupby("model", sort=False)
    ]
    frames += [
        s.fan[s.fan["step"] > 0].assign(series=f"what-if {m}")[["time", "p_above", "series"]]
        for m, s in (what_if or {}).items()
    ]
    rows = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({"time": [], "p_above": [], "series": []})
    )
    scale = _color_scale([*dict.fromkeys(rows["series"])])
    lines = (
        alt.Chart(rows)
        .mark_line(point=alt.OverlayMarkDef(size=16))
        .encode(
            x=alt.X("time:T", title="target time (UTC)"),
            y=alt.Y("p_above:Q", title="P(above last price)", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("series:N", scale=scale),
            tooltip=[
                "series:N",
                alt.Tooltip("time:T", format="%H:%M:%S"),
                alt.Tooltip("p_above:Q", format=".3f"),
            ],
        )
        .properties(description="p_above")
    )
    half = (
        alt.Chart(pd.DataFrame({"p": [0.5]}))
        .mark_rule(strokeDash=[2, 2], color="#999999")
        .encode(y="p:Q")
        .properties(description="half")
    )
    return (
        alt.layer(lines, half)
        .properties(height=340, description="p_above")
        .configure_legend(orient="bottom", title=None)
    )


def layer_names(chart: alt.TopLevelMixin) -> list[str]:
    """The ``description`` of every layer, in drawing order (for logs and tests)."""
    spec: dict[str, Any] = chart.to_dict(validate=False)
    out: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        for child in node.get("hconcat", []) + node.get("layer", []):
            walk(child)
        if "mark" in node and "description" in node:
            out.append(str(node["description"]))

    walk(spec)
    return out
