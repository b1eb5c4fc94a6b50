"""Both dashboards in a real browser (headless chromium), on the demo's live market data."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from infra.browser import (
    STREAMLIT_CHART,
    STREAMLIT_ERROR,
    DashboardUrls,
    open_dashboard,
    open_streamlit,
    streamlit_screenshot,
    superset_login,
)

pytestmark = pytest.mark.integration


def test_superset_refuses_a_wrong_password(
    stack: object, browser_page: Page, dashboard_urls: DashboardUrls
) -> None:
    wrong = DashboardUrls(**{**vars(dashboard_urls), "superset_password": "not-the-password"})
    with pytest.raises(PlaywrightTimeout):
        superset_login(browser_page, wrong, timeout_s=10)
    assert "/login" in browser_page.url
    response = browser_page.request.get(
        f"{dashboard_urls.superset}/api/v1/dashboard/" f"{dashboard_urls.dashboard_slug}"
    )
    assert response.status == 401


def test_superset_market_overview_renders_every_chart(
    live_market: object,
    model_tables: object,
    browser_page: Page,
    dashboard_urls: DashboardUrls,
    screenshot_dir: Path,
) -> None:
    page = browser_page
    superset_login(page, dashboard_urls)
    listing = page.request.get(
        f"{dashboard_urls.superset}/api/v1/dashboard/{dashboard_urls.dashboard_slug}/charts"
    )
    assert listing.ok, f"dashboard {dashboard_urls.dashboard_slug!r}: HTTP {listing.status}"
    expected = sorted(chart["slice_name"] for chart in listing.json()["result"])
    try:
        # a fresh stack's first forecast run shares the two cores with this load
        cells = open_dashboard(page, dashboard_urls, timeout_s=240)
    finally:
        page.screenshot(path=screenshot_dir / "superset-market-overview.png", full_page=True)

    assert sorted(cell.title for cell in cells) == expected
    broken = {
        cell.title: cell.error or ("no data" if cell.empty else "nothing drawn")
        for cell in cells
        if cell.error or cell.empty or not cell.rendered
    }
    assert not broken, f"charts not rendered: {broken}"


def test_streamlit_explorer_draws_the_fan_chart(
    live_market: object, browser_page: Page, dashboard_urls: DashboardUrls, screenshot_dir: Path
) -> None:
    page = browser_page
    shot = screenshot_dir / "streamlit-forecasts.png"
    try:
        fan_traces = open_streamlit(page, dashboard_urls)
        # The script keeps running after the first chart; judge the page once it has finished.
        streamlit_screenshot(page, shot)
    finally:
        if not shot.exists():
            page.screenshot(path=shot, full_page=True)

    assert fan_traces >= 1
    fan = page.locator(STREAMLIT_CHART).first
    box = fan.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200, box
    errors = page.locator(STREAMLIT_ERROR)
    assert errors.count() == 0, errors.first.inner_text()
