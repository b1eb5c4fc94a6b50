"""Browser fixtures for the dashboard tests: headless Debian chromium under Playwright.

tests/dashboards/conftest.py registers them once for every module (their function names differ
from the fixture names, so test arguments do not shadow the imports).

Screenshots go to ``$STATE_DIR/test-screenshots/`` (replaced by each run) and are listed at the
end of the session.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.browser import VIEWPORT, DashboardUrls, launch
from infra.errors import InstallError
from schemas.settings import state_dir


@pytest.fixture(scope="session", name="dashboard_urls")
def urls_fixture() -> DashboardUrls:
    return DashboardUrls.from_env()


class _ScreenshotSummary:
    """Lists the screenshots in pytest's closing summary (fixture output would be captured)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        shots = sorted(self.folder.glob("*.png"))
        if shots:
            terminalreporter.write_sep("-", f"dashboard screenshots in {self.folder}")
            for shot in shots:
                terminalreporter.write_line(f"  {shot.name}")


@pytest.fixture(scope="session", name="screenshot_dir")
def screenshot_dir_fixture(request: pytest.FixtureRequest) -> Path:
    folder = state_dir() / "test-screenshots"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    request.config.pluginmanager.register(_ScreenshotSummary(folder), "dashboard-screenshots")
    return folder


@pytest.fixture(scope="session", name="chromium")
def browser_fixture():  # type: ignore[no-untyped-def]
    try:
        with launch() as browser:
            yield browser
    except InstallError as exc:
        pytest.fail(f"headless browser unavailable: {exc}", pytrace=False)


@pytest.fixture(name="browser_page")
def page_fixture(chromium):  # type: ignore[no-untyped-def]
    """A fresh page (own cookies) with the screenshot viewport."""
    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(60_000)
    try:
        yield context.new_page()
    finally:
        context.close()
