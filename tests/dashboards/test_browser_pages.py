"""How the page helpers judge a dashboard, on pages served by the browser itself (no stack):
the markup mimics what Superset 6.1 and Streamlit 1.67 render, including the error states that
are hard to provoke on the live services."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from infra.browser import DashboardUrls, open_dashboard, open_streamlit
from infra.errors import InfraError

URLS = DashboardUrls(
    superset="http://superset.test",
    streamlit="http://streamlit.test",
    superset_user="u",
    superset_password="p",
    dashboard_slug="market-overview",
)


def cell(title: str, body: str) -> str:
    return (
        f'<div data-test="chart-grid-component"><div data-test="slice-header">'
        f'<span data-test="editable-title">{title}</span><span>1</span></div>{body}</div>'
    )


def serve(page: Page, url: str, html: str) -> None:
    page.route(url, lambda route: route.fulfill(body=html, content_type="text/html"))


ICON = '<svg class="menu-icon"></svg>'  # every cell header has svg icons


def test_dashboard_waits_until_each_chart_has_drawn_once(browser_page: Page) -> None:
    # A loader Superset left behind (hidden); a chart whose loader (an animated svg) gives way to
    # its drawn canvas 3 s after the page appears, just as the auto-refresh puts the table back
    # into loading for good: the table has been drawn once, which is what counts.
    html = "".join(
        [
            cell(
                "prices",
                f'{ICON}<div data-test="chart-container"><div id="loader" '
                'data-test="loading-indicator"><svg width="9" height="9"></svg></div>'
                '<canvas id="late" width="80" height="40"></canvas></div>',
            ),
            cell(
                "trades",
                '<div data-test="chart-container" id="trades"><table><tbody><tr><td>x'
                "</td></tr></tbody></table></div>",
            ),
            cell("total", '<div data-test="chart-container">12,345</div>'),
            '<div aria-label="Loading" style="display:none"></div>',
            "<script>setTimeout(() => { document.getElementById('late').getContext('2d')"
            ".fillRect(0, 0, 10, 10); document.getElementById('loader').remove();"
            " document.getElementById('trades').innerHTML ="
            ' \'<div aria-label="Loading"><svg width="9" height="9"></svg></div>\' }, 3000)'
            "</script>",
        ]
    )
    serve(browser_page, f"{URLS.superset}/superset/dashboard/market-overview/", html)
    cells = open_dashboard(browser_page, URLS, timeout_s=15)
    assert [(c.title, c.rendered, c.empty, c.error) for c in cells] == [
        ("prices", True, False, None),
        ("trades", True, False, None),
        ("total", True, False, None),
    ]
    settled = {c.title: c.settled_s or 0.0 for c in cells}
    assert settled["trades"] < 3.0 <= settled["prices"] < 15


def test_a_chart_once_drawn_is_not_read_again_while_others_load(browser_page: Page) -> None:
    # Reading a canvas's pixels is the costly part of judging a cell; the dashboard's own
    # rendering shares the CPU with it.
    html = "".join(
        [
            cell("early", '<div data-test="chart-container"><canvas id="early"></canvas></div>'),
            cell("late", '<div data-test="chart-container"><canvas id="late"></canvas></div>'),
            "<script>window.reads = {};"
            "const read = CanvasRenderingContext2D.prototype.getImageData;"
            "CanvasRenderingContext2D.prototype.getImageData = function (...a) {"
            " window.reads[this.canvas.id] = (window.reads[this.canvas.id] || 0) + 1;"
            " return read.apply(this, a); };"
            "const paint = id => document.getElementById(id).getContext('2d')"
            ".fillRect(0, 0, 10, 10);"
            "paint('early'); setTimeout(() => paint('late'), 2000);</script>",
        ]
    )
    serve(browser_page, f"{URLS.superset}/superset/dashboard/market-overview/", html)
    cells = open_dashboard(browser_page, URLS, timeout_s=15)
    assert [(c.title, c.rendered) for c in cells] == [("early", True), ("late", True)]
    reads = browser_page.evaluate("window.reads")
    assert reads["early"] == 1, reads
    assert reads["late"] > 1, reads  # judged on every poll until it drew


def test_dashboard_reports_blank_failed_and_empty_charts(browser_page: Page) -> None:
    html = "".join(
        [
            cell(
                "blank",
                f'{ICON}<div data-test="chart-container"><canvas width="80" '
                'height="40"></canvas></div>',
            ),
            cell(
                "broken", '<div role="alert" class="ant-alert-error">Data error: Trino down</div>'
            ),
            cell("empty", "<div>No results were returned for this query</div>"),
        ]
    )
    serve(browser_page, f"{URLS.superset}/superset/dashboard/market-overview/", html)
    cells = {c.title: c for c in open_dashboard(browser_page, URLS, timeout_s=2)}
    assert not cells["blank"].rendered and not cells["blank"].empty and not cells["blank"].error
    assert cells["broken"].error == "Data error: Trino down"
    assert cells["empty"].empty and not cells["empty"].rendered


def test_dashboard_without_charts_times_out(browser_page: Page) -> None:
    serve(
        browser_page,
        f"{URLS.superset}/superset/dashboard/market-overview/",
        "<h1>404 Not found</h1>",
    )
    with pytest.raises(Exception, match="Timeout"):
        open_dashboard(browser_page, URLS, timeout_s=2)


def test_streamlit_counts_the_first_charts_marks(browser_page: Page) -> None:
    mark = '<g class="mark-line role-mark"></g>'
    serve(
        browser_page,
        URLS.streamlit,
        (
            # a Plotly chart is not the fan; the first Vega-Lite chart is
            '<div data-testid="stPlotlyChart"><svg class="main-svg"><g class="trace"></g></svg>'
            f'</div><div data-testid="stVegaLiteChart"><svg class="marks">{mark * 3}</svg></div>'
            f'<div data-testid="stVegaLiteChart"><svg class="marks">{mark}</svg></div>'
        ),
    )
    assert open_streamlit(browser_page, URLS, timeout_s=5) == 3


def test_streamlit_app_error_fails_at_once_with_its_text(browser_page: Page) -> None:
    serve(
        browser_page,
        URLS.streamlit,
        ('<div data-testid="stException">StreamlitAPIException: value must be &lt;= 2^53</div>'),
    )
    with pytest.raises(InfraError, match="streamlit: the app shows an error: StreamlitAPIExc"):
        open_streamlit(browser_page, URLS, timeout_s=30)
