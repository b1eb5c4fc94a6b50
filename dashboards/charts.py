"""Plotly figures of the forecast explorer, built from the frames of :mod:`dashboards.forecasts`.

Every trace carries ``meta = {"model": ..., "role": ...}`` (roles: ``candles``, ``q05`` .. ``q95``,
``path``, ``realised``, ``what-if q05`` ...), and every figure ``layout.meta = {"chart": ...}``,
so a test, or anyone reading the JSON, can tell the traces apart without relying on order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "coverage_figure",
    "leaderboard_figure",
    "model_color",
    "skill_figure",
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
