"""The browser fixtures, defined once for every dashboard test module: a session-scoped fixture
imported into two modules is two fixtures, and a second Playwright started in the same thread
while the first runs fails ("Sync API inside the asyncio loop")."""

from tests.dashboards.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    page_fixture,
    screenshot_dir_fixture,
    urls_fixture,
)
