"""Plotly figures of the forecast explorer, built from the frames of :mod:`dashboards.forecasts`.

Every trace carries ``meta = {"model": ..., "role": ...}`` (roles: ``candles``, ``q05`` .. ``q95``,
``path``, ``realised``, ``what-if q05`` ...), and every figure ``layout.meta = {"chart": ...}``,
so a test, or anyone reading the JSON, can tell the traces apart without relying on order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.what_if import WhatIfResult

__all__ = [
    "coverage_figure",
    "fan_figure",
    "leaderboard_figure",
    "model_color",
    "p_above_figure",
    "skill_figure",
    "terminal_figure",
]

COLORS = {
    "gbm": "#1f77b4",
    "ewma_t": "#ff7f0e",
    "hist_sim": "#2ca02c",
    "mlp": "#9467bd",
    "xgb": "#8c564b",
    "prophet": "#e377c2",
}
WHAT_IF_COLOR = "#d62728"
REALISED_COLOR = "#111111"
#: the leaderboard chart's lowest skill shown; a model far worse runs off the bottom
SKILL_FLOOR = -0.5


def model_color(model: str) -> str:
    return COLORS.get(model, "#7f7f7f")


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _values(series: pd.Series[Any]) -> list[float]:
    # Plain lists: plotly would otherwise encode numpy arrays as base64 in the JSON.
    return [float(v) for v in series]


def _times(series: pd.Series[Any]) -> list[str]:
    return [t.isoformat() for t in pd.to_datetime(series, utc=True)]


def _finish(fig: go.Figure, chart: str, height: int) -> go.Figure:
    fig.update_layout(
        meta={"chart": chart},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.15},
        hovermode="x unified",
    )
    return fig


def _band(
    fig: go.Figure,
    fan: pd.DataFrame,
    lo: str,
    hi: str,
    model: str,
    label: str,
    alpha: float,
    col: int,
    show_legend: bool,
) -> None:
    _band_edges(
        fig,
        _times(fan["time"]),
        (_values(fan[lo]), _values(fan[hi])),
        color=model_color(model),
        alpha=alpha,
        names=(f"{model} {lo}", f"{model} {label}"),
        metas=({"model": model, "role": lo}, {"model": model, "role": hi}),
        col=col,
        show_legend=show_legend,
        legendgroup=model,
    )


def _band_edges(
    fig: go.Figure,
    x: list[str] | list[float],
    edges: tuple[list[float], list[float]],
    *,
    color: str,
    alpha: float,
    names: tuple[str, str],
    metas: tuple[dict[str, Any], dict[str, Any]],
    col: int,
    show_legend: bool,
    **common: Any,
) -> None:
    """A shaded band between two invisible lines, the low edge then the high one; ``common``
    goes to both traces. The band's legend entry, if any, is the high edge's."""
    for edge, y, name, meta in zip(("lo", "hi"), edges, names, metas, strict=True):
        # "tonexty" fills down to the trace just added: the band's other edge.
        fill = {"fill": "tonexty", "fillcolor": _rgba(color, alpha)} if edge == "hi" else {}
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line={"width": 0, "color": color},
                name=name,
                meta=meta,
                showlegend=show_legend and edge == "hi",
                **fill,
                **common,
            ),
            row=1,
            col=col,
        )


def _path_line(
    fig: go.Figure,
    path: pd.DataFrame,
    color: str,
    name: str,
    meta: dict[str, Any],
    col: int,
    **extra: Any,
) -> None:
    """One simulated price path (``time``, ``price``): a thin line, no hover, no legend entry."""
    fig.add_trace(
        go.Scatter(
            x=_times(path["time"]),
            y=_values(path["price"]),
            mode="lines",
            line={"width": 0.7, "color": color},
            hoverinfo="skip",
            name=name,
            meta=meta,
            showlegend=False,
            **extra,
        ),
        row=1,
        col=col,
    )


def fan_figure(
    fan: pd.DataFrame,
    *,
    candles: pd.DataFrame,
    candle_label: str,
    realised: pd.DataFrame,
    paths: pd.DataFrame,
    what_if: Mapping[str, WhatIfResult] | None = None,
) -> go.Figure:
    """Price history as candles with each model's forecast fan (5-95% and 25-75% bands, median),
    sample paths and the realised price over it; one panel per model, side by side.

    :param fan: :func:`dashboards.forecasts.fan_frame` of the models to show
    :param candles: bars (``window_start, open, high, low, close``)
    :param realised: ``time, close`` since the forecast's as-of time
    :param paths: :func:`dashboards.forecasts.paths_frame` (may be empty)
    :param what_if: per model, a re-simulation to overlay (dashed)
    """
    models = list(dict.fromkeys(fan["model"]))
    fig = make_subplots(
        rows=1,
        cols=max(len(models), 1),
        shared_yaxes=True,
        subplot_titles=models or None,
        horizontal_spacing=0.02,
    )
    for col, model in enumerate(models, start=1):
        first = col == 1
        model_fan = fan[fan["model"] == model]
        color = model_color(model)
        if not candles.empty:
            fig.add_trace(
                go.Candlestick(
                    x=_times(candles["window_start"]),
                    open=_values(candles["open"]),
                    high=_values(candles["high"]),
                    low=_values(candles["low"]),
                    close=_values(candles["close"]),
                    name=f"{candle_label} candles",
                    meta={"model": model, "role": "candles"},
                    showlegend=first,
                    legendgroup="candles",
                    increasing_line_color="#7a7a7a",
                    decreasing_line_color="#b0b0b0",
                ),
                row=1,
                col=col,
            )
        model_paths = paths[paths["model"] == model] if not paths.empty else paths
        for path, one in model_paths.groupby("path") if not model_paths.empty else ():
            # pandas-stubs types a group key as any scalar; "path" is an integer column.
            path_id = int(cast(int, path))
            _path_line(
                fig,
                one,
                _rgba(color, 0.35),
                f"{model} path {path_id}",
                {"model": model, "role": "path", "path": path_id},
                col,
                legendgroup=model,
            )
        _band(fig, model_fan, "q05", "q95", model, "5-95%", 0.15, col, first)
        _band(fig, model_fan, "q25", "q75", model, "25-75%", 0.30, col, first)
        fig.add_trace(
            go.Scatter(
                x=_times(model_fan["time"]),
                y=_values(model_fan["q50"]),
                mode="lines",
                line={"width": 2, "color": color},
                name=f"{model} median",
                meta={"model": model, "role": "q50"},
                legendgroup=model,
            ),
            row=1,
            col=col,
        )
        sim = (what_if or {}).get(model)
        if sim is not None:
            for _, one in sim.paths.groupby("path"):
                _path_line(
                    fig,
                    one,
                    _rgba(WHAT_IF_COLOR, 0.3),
                    "what-if path",
                    {"model": model, "role": "what-if path"},
                    col,
                )
            for q, dash in (("q05", "dot"), ("q50", "dash"), ("q95", "dot")):
                fig.add_trace(
                    go.Scatter(
                        x=_times(sim.fan["time"]),
                        y=_values(sim.fan[q]),
                        mode="lines",
                        line={"width": 1.5, "color": WHAT_IF_COLOR, "dash": dash},
                        name=f"what-if {q}",
                        meta={"model": model, "role": f"what-if {q}"},
                        showlegend=first,
                        legendgroup="what-if",
                    ),
                    row=1,
                    col=col,
                )
        if not realised.empty:
            fig.add_trace(
                go.Scatter(
                    x=_times(realised["time"]),
                    y=_values(realised["close"]),
                    mode="lines",
                    line={"width": 2, "color": REALISED_COLOR},
                    name="realised",
                    meta={"model": model, "role": "realised"},
                    showlegend=first,
                    legendgroup="realised",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_yaxes(title_text="price", row=1, col=1)
    return _finish(fig, "fan", 480)


def terminal_figure(
    histograms: Mapping[str, pd.DataFrame],
    densities: Mapping[str, pd.DataFrame],
    *,
    last_price: float,
    what_if: Mapping[str, WhatIfResult] | None = None,
) -> go.Figure:
    """Terminal-price histogram (as a density) and the density from the percentiles per model."""
    fig = go.Figure()
    for model, hist in histograms.items():
        color = model_color(model)
        fig.add_trace(
            go.Bar(
                x=_values((hist["lo"] + hist["hi"]) / 2),
                y=_values(hist["density"].fillna(0)),
                width=_values(hist["hi"] - hist["lo"]),
                marker_color=_rgba(color, 0.35),
                name=f"{model} histogram",
                meta={"model": model, "role": "histogram"},
            )
        )
    for model, density in densities.items():
        fig.add_trace(
            go.Scatter(
                x=_values(density["price"]),
                y=_values(density["density"]),
                mode="lines",
                line={"color": model_color(model), "width": 2},
                name=f"{model} density",
                meta={"model": model, "role": "density"},
            )
        )
    for model, sim in (what_if or {}).items():
        fig.add_trace(
            go.Scatter(
                x=_values(sim.density["price"]),
                y=_values(sim.density["density"]),
                mode="lines",
                line={"color": WHAT_IF_COLOR, "width": 2, "dash": "dash"},
                name=f"what-if {model} density",
                meta={"model": model, "role": "what-if density"},
            )
        )
    fig.add_vline(
        x=last_price, line={"color": REALISED_COLOR, "dash": "dot"}, annotation_text="last price"
    )
    fig.update_layout(
        barmode="overlay",
        xaxis_title="price at the horizon",
        yaxis_title="density (share of paths per unit of price)",
    )
    return _finish(fig, "terminal", 360)


def p_above_figure(
    fan: pd.DataFrame, what_if: Mapping[str, WhatIfResult] | None = None
) -> go.Figure:
    """P(price above the last price) per model over the horizon."""
    fig = go.Figure()
    steps = fan[fan["step"] > 0]
    for model, one in steps.groupby("model", sort=False):
        fig.add_trace(
            go.Scatter(
                x=_times(one["time"]),
                y=_values(one["p_above"]),
                mode="lines+markers",
                line={"color": model_color(str(model))},
                marker={"size": 4},
                name=str(model),
                meta={"model": model, "role": "p_above"},
            )
        )
    for model, sim in (what_if or {}).items():
        one = sim.fan[sim.fan["step"] > 0]
        fig.add_trace(
            go.Scatter(
                x=_times(one["time"]),
                y=_values(one["p_above"]),
                mode="lines",
                line={"color": WHAT_IF_COLOR, "dash": "dash"},
                name=f"what-if {model}",
                meta={"model": model, "role": "what-if p_above"},
            )
        )
    fig.add_hline(y=0.5, line={"color": "#999999", "dash": "dot"})
    fig.update_layout(
        yaxis={"title": "P(above last price)", "range": [0, 1]}, xaxis_title="target time (UTC)"
    )
    return _finish(fig, "p_above", 320)


def coverage_figure(coverage: pd.DataFrame) -> go.Figure:
    """Backtest coverage of the 50% and 90% bands per horizon, with each model's 95% binomial
    acceptance band (shaded) and the nominal coverage (dotted)."""
    bands = ["50%", "90%"]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=[f"{b} band" for b in bands], horizontal_spacing=0.08
    )
    for col, band in enumerate(bands, start=1):
        rows = coverage[coverage["band"] == band]
        for model, one in rows.groupby("model", sort=False):
            color = model_color(str(model))
            x = _values(one["horizon_s"])
            meta = {"model": model, "band": band}
            _band_edges(
                fig,
                x,
                (_values(one["lo"]), _values(one["hi"])),
                color=color,
                alpha=0.12,
                names=(f"{model} {band} band low", f"{model} {band} band high"),
                metas=({**meta, "role": "band lo"}, {**meta, "role": "band hi"}),
                col=col,
                show_legend=False,
                hoverinfo="skip",
                legendgroup=str(model),
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=_values(one["coverage"]),
                    mode="lines+markers",
                    line={"color": color},
                    name=str(model),
                    showlegend=col == 1,
                    meta={**meta, "role": "coverage"},
                    customdata=[[int(n)] for n in one["n"]],
                    hovertemplate="%{y:.2f} of %{customdata[0]} forecasts",
                    legendgroup=str(model),
                ),
                row=1,
                col=col,
            )
        if not rows.empty:
            nominal = float(rows["nominal"].iloc[0])
            fig.add_hline(y=nominal, line={"color": "#999999", "dash": "dot"}, row=1, col=col)
        fig.update_xaxes(title_text="horizon (s)", row=1, col=col)
    fig.update_yaxes(title_text="share of realised prices inside", range=[0, 1])
    return _finish(fig, "coverage", 340)


def _skill_lines(
    skill: pd.DataFrame,
    baseline: str,
    x: Callable[[pd.DataFrame], list[Any]],
    x_title: str,
    mode: str,
) -> go.Figure:
    """One line of CRPS skill against ``baseline`` per model, ``x(rows of the model)`` along
    the x axis, and the zero line (no better than the baseline)."""
    fig = go.Figure()
    for model, one in skill.groupby("model", sort=False):
        fig.add_trace(
            go.Scatter(
                x=x(one),
                y=_values(one["skill"]),
                mode=mode,
                line={"color": model_color(str(model))},
                name=str(model),
                meta={"model": model, "role": "skill"},
            )
        )
    fig.add_hline(y=0.0, line={"color": "#999999", "dash": "dot"})
    fig.update_layout(yaxis_title=f"CRPS skill vs {baseline}", xaxis_title=x_title)
    return fig


def skill_figure(skill: pd.DataFrame, baseline: str) -> go.Figure:
    """CRPS skill against ``baseline`` per model over backtest evaluations (> 0: better)."""
    fig = _skill_lines(
        skill,
        baseline,
        lambda one: _times(one["evaluated_at"]),
        "evaluated at (UTC)",
        "lines+markers",
    )
    return _finish(fig, "skill", 300)


def leaderboard_figure(skill: pd.DataFrame, baseline: str) -> go.Figure:
    """The leaderboard as a chart: each model's CRPS skill against ``baseline`` by horizon
    (:func:`dashboards.forecasts.leaderboard_skill`); above 0 beats it, the higher the better."""
    fig = _skill_lines(
        skill,
        baseline,
        lambda one: [int(h) for h in one["horizon"]],
        "horizon (minutes ahead)",
        "lines",
    )
    fig = _finish(fig, "leaderboard", 320)
    fig.update_layout(hovermode="x")
    values = [v for v in _values(skill["skill"]) if v == v]
    if values and min(values) < SKILL_FLOOR:  # prophet's -40 would flatten everything else
        fig.update_yaxes(range=[SKILL_FLOOR, max(0.1, max(values) + 0.02)])
    return fig


def trace_roles(fig: go.Figure) -> Sequence[tuple[str, str]]:
    """``(model, role)`` of every trace, in order (for logs and tests)."""
    return [((t.meta or {}).get("model", ""), (t.meta or {}).get("role", "")) for t in fig.data]
