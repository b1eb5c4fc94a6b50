"""The Superset login helper against a stand-in for Superset's login flow on loopback (no
stack): the form, the POST answered with a redirect, and a welcome page that is slow to load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page

from infra.browser import DashboardUrls, superset_login
from schemas.settings import SecretStr
from tests.conftest import serving

LOGIN_FORM = (
    b'<form method="post" action="/login/"><input data-test="username-input" name="username">'
    b'<input data-test="password-input" name="password" type="password">'
    b'<button data-test="login-button" type="submit">Sign in</button></form>'
)
# The welcome page's load event waits for an image that is not answered until the test ends, as
# a busy Superset's bundles were not, for over a minute, under make test's load.
WELCOME = b'<h1>Welcome</h1><img src="/static/slow.png">'


class FakeSuperset(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), LoginHandler)
        self.posted: list[str] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class LoginHandler(BaseHTTPRequestHandler):
    server: FakeSuperset

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/html", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/static/slow.png":
            self.server.release.wait(30)
            self._send(404)
        elif self.path == "/login/":
            self._send(200, LOGIN_FORM)
        else:
            self._send(200, WELCOME)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", "0"))
        self.server.posted.append(self.rfile.read(length).decode())
        self._send(302, Location="/superset/welcome/")


@pytest.fixture
def fake_superset() -> Iterator[FakeSuperset]:
    server = FakeSuperset()
    with serving(server):
        try:
            yield server
        finally:
            server.release.set()  # before the shutdown, which waits for the image's request


def test_login_returns_once_the_redirect_away_from_login_commits(
    browser_page: Page, fake_superset: FakeSuperset
) -> None:
    urls = DashboardUrls(
        superset=fake_superset.url,
        streamlit="http://127.0.0.1:9",
        superset_user="u",
        superset_password=SecretStr("p"),
        dashboard_slug="market-overview",
    )
    t0 = time.monotonic()
    superset_login(browser_page, urls, timeout_s=10)

    assert time.monotonic() - t0 < 10
    assert fake_superset.posted == ["username=u&password=p"]
    assert browser_page.url == f"{fake_superset.url}/superset/welcome/"
