"""The headless browser behind the dashboard tests, screenshots and benchmark: Debian's chromium.

``python -m infra.browser install`` installs it with apt-get when it is missing (as root, or with
passwordless sudo) and is a no-op when it is there. Playwright drives it via ``executable_path``,
so Playwright's own browser download (``playwright install``) is never used.

``python -m infra.browser screenshots`` refreshes the README's pictures of both dashboards from the
running stack.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dashboards.superset.bundle import DASHBOARD_SLUG
from infra.config import InfraConfig
from infra.errors import InfraError, InstallError, report
from infra.tools import apt_install
from schemas.settings import (
    CREDENTIALS_FILE_NAME,
    SecretStr,
    SettingsError,
    env_value,
    load_credentials_file,
    port_setting,
    secret_setting,
    state_dir,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

DEFAULT_CHROMIUM = "/usr/bin/chromium"
APT_PACKAGE = "chromium"
LAUNCH_ARGS = ["--disable-dev-shm-usage", "--disable-gpu"]
VIEWPORT: ViewportSize = {"width": 1600, "height": 1000}
REPO_ROOT = Path(__file__).resolve().parent.parent
IMG_DIR = REPO_ROOT / "docs" / "img"


def chromium_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env_value(env, "CHROMIUM_PATH") or DEFAULT_CHROMIUM)


def chromium_version(path: Path) -> str | None:
    """``Chromium 156.0.8078.108 built on Debian ...``, or None when ``path`` does not run."""
    try:
        result = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def ensure_chromium(env: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The browser's path and version, installing Debian's package first when it is missing."""
    env = os.environ if env is None else env
    path = chromium_path(env)
    version = chromium_version(path)
    if version:
        return path, version
    if env_value(env, "CHROMIUM_PATH"):
        raise InstallError(f"CHROMIUM_PATH={path} is not a runnable Chromium (--version failed)")
    if shutil.which("apt-get") is None:
        raise InstallError(
            f"no Chromium at {path} and no apt-get to install it: install Chromium and set "
            "CHROMIUM_PATH to its binary"
        )
    result = apt_install(
        APT_PACKAGE,
        missing=f"no Chromium at {path}",
        alternative=" or set CHROMIUM_PATH",
        size=" (about 150 MB)",
    )
    if result.returncode != 0:
        raise InstallError(f"apt-get install {APT_PACKAGE} failed: {_last_line(result)}")
    version = chromium_version(path)
    if not version:
        raise InstallError(f"apt-get installed {APT_PACKAGE} but {path} --version fails")
    return path, version


@contextmanager
def launch(env: Mapping[str, str] | None = None) -> Iterator[Browser]:
    """Headless chromium under Playwright (which adds --no-sandbox itself, so root works)."""
    from playwright.sync_api import sync_playwright

    path, _ = ensure_chromium(env)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(path), headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# --- the dashboards' pages ---------------------------------------------------------------------

CHART_CELL = '[data-test="chart-grid-component"]'
# The fan is a Vega-Lite chart (one per model shown), drawn as SVG: a drawn chart has marks.
STREAMLIT_CHART = '[data-testid="stVegaLiteChart"]'
STREAMLIT_MARK = "svg.marks .role-mark"
STREAMLIT_TRACE = f"{STREAMLIT_CHART} {STREAMLIT_MARK}"
STREAMLIT_ERROR = '[data-testid="stException"], [data-testid="stAlertContentError"]'
STREAMLIT_RUNNING = '[data-testid="stStatusWidget"]'


@dataclass(frozen=True)
class DashboardUrls:
    superset: str
    streamlit: str
    superset_user: str
    superset_password: SecretStr  # a str given here is wrapped: it never prints
    dashboard_slug: str

    def __post_init__(self) -> None:
        if not isinstance(self.superset_password, SecretStr):
            object.__setattr__(self, "superset_password", SecretStr(self.superset_password))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DashboardUrls:
        env = os.environ if env is None else env
        saved = load_credentials_file(state_dir(env) / CREDENTIALS_FILE_NAME)
        superset_port = port_setting(env, "SUPERSET_PORT", InfraConfig.superset_port)
        streamlit_port = port_setting(env, "STREAMLIT_PORT", InfraConfig.streamlit_port)
        return cls(
            superset=f"http://127.0.0.1:{superset_port}",
            streamlit=f"http://127.0.0.1:{streamlit_port}",
            superset_user=env_value(env, "SUPERSET_ADMIN_USER")
            or saved.get("SUPERSET_ADMIN_USER", "admin"),
            superset_password=secret_setting(env, "SUPERSET_ADMIN_PASSWORD")
            or SecretStr(saved.get("SUPERSET_ADMIN_PASSWORD", "")),
            dashboard_slug=DASHBOARD_SLUG,
        )


@dataclass(frozen=True)
class ChartCell:
    title: str
    rendered: bool  # svg, canvas or table inside, or text for a big number
    empty: bool  # Superset's "No results" state instead of data
    error: str | None
    settled_s: float | None = None  # seconds from navigation to drawn, failed or empty


def superset_login(page: Page, urls: DashboardUrls, timeout_s: float = 60) -> None:
    if not urls.superset_password.get_secret_value():
        raise InfraError(
            "no Superset admin password: set SUPERSET_ADMIN_PASSWORD or start Superset with "
            "`python -m infra up` (it writes $STATE_DIR/credentials.env)"
        )
    page.goto(f"{urls.superset}/login/", wait_until="domcontentloaded", timeout=timeout_s * 1000)
    page.fill('[data-test="username-input"]', urls.superset_user)
    page.fill('[data-test="password-input"]', urls.superset_password.get_secret_value())
    page.click('[data-test="login-button"]')
    # Logged in once the redirect away from /login is committed: waiting for the welcome page's
    # load event as well (Playwright's default) took over 60 s on a loaded machine, and every
    # caller navigates on at once.
    page.wait_for_url(lambda u: "/login" not in u, wait_until="commit", timeout=timeout_s * 1000)


def open_dashboard(page: Page, urls: DashboardUrls, timeout_s: float = 90) -> list[ChartCell]:
    """Open the dashboard and return each chart cell as it was when it first settled (drawn,
    failed or empty), with the seconds from navigation to then; a cell that has not settled by
    the timeout comes back as it is then, with ``rendered=False``.

    Each cell counts once: the dashboard's auto-refresh reloads every chart on its own timer,
    so on a slow machine some chart may always be loading again."""
    t0 = time.monotonic()
    page.goto(
        f"{urls.superset}/superset/dashboard/{urls.dashboard_slug}/",
        wait_until="domcontentloaded",
        timeout=timeout_s * 1000,
    )
    page.wait_for_selector(CHART_CELL, state="attached", timeout=timeout_s * 1000)
    settled: dict[int, ChartCell] = {}
    while True:
        # A settled cell is not judged again: reading a drawn chart's canvas pixels every 100 ms
        # took the page's own CPU while the other charts were still loading.
        cells = _judge_cells(page, sorted(settled))
        now = time.monotonic() - t0
        # A cell that comes back None is a settled one, skipped.
        for n, cell in enumerate(cells):
            if cell is not None and (cell.rendered or cell.empty or cell.error):
                settled[n] = replace(cell, settled_s=now)
        if len(settled) == len(cells) or now > timeout_s:
            return [
                settled[n] if cell is None else settled.get(n, cell) for n, cell in enumerate(cells)
            ]
        page.wait_for_timeout(100)


# One cell's state. Loaders (an animated svg) come and go before ECharts has drawn, and every
# cell header holds svg icons, so a chart counts as drawn only by what its body shows with no
# loader in it: painted canvas pixels (ECharts), table rows, an svg, or digits (big numbers).
_JUDGE_CELLS = """(cells, skip) => cells.map((cell, n) => {
  if (skip.includes(n)) return null;
  const LOADER = '[data-test="loading-indicator"], [aria-label="Loading"]';
  // The header also holds badges (e.g. the count of filters applied): take the title alone.
  const title = cell.querySelector('[data-test="editable-title"]') ||
    cell.querySelector('[data-test="slice-header"]');
  const alert = cell.querySelector('[role="alert"]');
  const body = cell.querySelector('[data-test="chart-container"], .chart-container');
  const painted = c => {
    if (!c.width || !c.height) return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 64) if (d[i] > 0) return true;
    return false;
  };
  const loading = !!body && [...body.querySelectorAll(LOADER)]
    .some(e => e.getClientRects().length > 0);
  const drawn = !!body && !loading && (
    !!body.querySelector('table tbody tr') ||
    [...body.querySelectorAll('svg')].some(s => !s.closest(LOADER)) ||
    [...body.querySelectorAll('canvas')].some(painted) ||
    (!body.querySelector('canvas') && /\\d/.test(body.innerText)));
  return {
    title: title ? title.innerText.trim() : '?',
    error: alert ? alert.innerText.trim() : null,
    empty: /No results were returned|No data/.test(cell.innerText),
    rendered: drawn,
  };
})"""


def _judge_cells(page: Page, skip: list[int]) -> list[ChartCell | None]:
    """Every chart cell's state, None for the cells at the indices in ``skip``."""
    states = page.locator(CHART_CELL).evaluate_all(_JUDGE_CELLS, skip)
    return [None if state is None else ChartCell(**state) for state in states]


def chart_cells(page: Page) -> list[ChartCell]:
    return [cell for cell in _judge_cells(page, []) if cell is not None]


def open_streamlit(page: Page, urls: DashboardUrls, timeout_s: float = 60) -> int:
    """Open the forecast explorer, wait until its first chart (the fan) has drawn, and return
    how many layers of marks (candles, bands, lines) that chart has; an app error on the page
    raises at once."""
    page.goto(urls.streamlit, wait_until="domcontentloaded", timeout=timeout_s * 1000)
    page.wait_for_selector(
        f"{STREAMLIT_TRACE}, {STREAMLIT_ERROR}", state="attached", timeout=timeout_s * 1000
    )
    errors = page.locator(STREAMLIT_ERROR)
    if errors.count():
        text = " ".join(errors.first.inner_text().split())
        raise InfraError(f"streamlit: the app shows an error: {text[:300]}")
    return page.locator(STREAMLIT_CHART).first.locator(STREAMLIT_MARK).count()


def streamlit_screenshot(page: Page, path: Path, timeout_s: float = 60) -> None:
    """The whole app once its script run has finished. Streamlit scrolls inside its main block,
    not the document, so the viewport is stretched to the content's height for the picture."""
    page.wait_for_selector(STREAMLIT_RUNNING, state="detached", timeout=timeout_s * 1000)
    height = page.evaluate(
        '() => Math.max(...[...document.querySelectorAll(\'[data-testid="stMain"], '
        '[data-testid="stSidebarContent"]\')].map(e => e.scrollHeight), innerHeight)'
    )
    size = page.viewport_size or VIEWPORT
    page.set_viewport_size({"width": size["width"], "height": int(height)})
    page.wait_for_timeout(1000)  # plotly redraws at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


# --- CLI ---------------------------------------------------------------------------------------


def screenshots(out_dir: Path = IMG_DIR) -> list[Path]:
    urls = DashboardUrls.from_env()
    out_dir.mkdir(parents=True, exist_ok=True)
    superset_png = out_dir / "superset-market-overview.png"
    streamlit_png = out_dir / "streamlit-forecasts.png"
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with launch() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        superset_login(page, urls)
        cells = open_dashboard(page, urls)
        failed = [c.title for c in cells if c.error or c.empty or not c.rendered]
        if failed:
            raise InfraError(f"superset: charts not rendered: {', '.join(failed)}")
        # Charts reload once the filters' default values apply: take the picture between
        # reloads, or as it is after 30 s (the auto-refresh may never leave the page idle).
        idle = ", ".join(
            f"{CHART_CELL} {sel}:visible"
            for sel in ('[data-test="loading-indicator"]', '[aria-label="Loading"]')
        )
        try:
            page.wait_for_selector(idle, state="detached", timeout=30_000)
        except PlaywrightTimeout:
            pass
        page.screenshot(path=str(superset_png), full_page=True)
        open_streamlit(page, urls)
        streamlit_screenshot(page, streamlit_png)
    return [superset_png, streamlit_png]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.browser", description=__doc__)
    parser.add_argument("command", choices=("install", "screenshots"))
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            t0 = time.monotonic()
            path, version = ensure_chromium()
            print(f"infra: {version} at {path} ({time.monotonic() - t0:.1f} s)")
        else:
            for path in screenshots():
                print(f"infra: wrote {path.relative_to(REPO_ROOT)}")
    except (InfraError, SettingsError) as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
