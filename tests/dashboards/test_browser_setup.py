"""The browser install step and the dashboards' addresses, without a running stack."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.browser import DEFAULT_CHROMIUM, DashboardUrls, chromium_path, ensure_chromium
from infra.errors import InstallError
from schemas.settings import SettingsError


def fake_binary(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "chromium"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_default_path_and_override() -> None:
    assert chromium_path({}) == Path(DEFAULT_CHROMIUM)
    assert chromium_path({"CHROMIUM_PATH": " /opt/c/chrome "}) == Path("/opt/c/chrome")


def test_present_browser_is_not_reinstalled(tmp_path: Path) -> None:
    path = fake_binary(tmp_path, 'echo "Chromium 1.2.3 test build"')
    assert ensure_chromium({"CHROMIUM_PATH": str(path)}) == (path, "Chromium 1.2.3 test build")


@pytest.mark.parametrize("body", ["exit 1", "echo"])
def test_broken_override_names_the_variable(tmp_path: Path, body: str) -> None:
    path = fake_binary(tmp_path, body)
    with pytest.raises(InstallError, match=f"CHROMIUM_PATH={path} is not a runnable Chromium"):
        ensure_chromium({"CHROMIUM_PATH": str(path)})


def test_missing_override_is_not_installed_over(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="CHROMIUM_PATH="):
        ensure_chromium({"CHROMIUM_PATH": str(tmp_path / "nowhere")})


def test_urls_and_credentials_from_state_dir(tmp_path: Path) -> None:
    (tmp_path / "credentials.env").write_text(
        "CASSANDRA_PASSWORD=x\nSUPERSET_ADMIN_USER=boss\nSUPERSET_ADMIN_PASSWORD=s3cret\n"
    )
    urls = DashboardUrls.from_env({"STATE_DIR": str(tmp_path), "STREAMLIT_PORT": "9501"})
    assert urls.superset == "http://127.0.0.1:8088"
    assert urls.streamlit == "http://127.0.0.1:9501"
    assert (urls.superset_user, urls.superset_password.get_secret_value()) == ("boss", "s3cret")
    assert "s3cret" not in f"{urls} {urls!r} {urls.superset_password}"
    assert urls.dashboard_slug == "market-overview"
    env_wins = DashboardUrls.from_env(
        {
            "STATE_DIR": str(tmp_path),
            "SUPERSET_ADMIN_USER": "me",
            "SUPERSET_ADMIN_PASSWORD": "pw",
        }
    )
    assert (env_wins.superset_user, env_wins.superset_password.get_secret_value()) == ("me", "pw")
    given = DashboardUrls(**{**vars(urls), "superset_password": "typed-in"})
    assert given.superset_password.get_secret_value() == "typed-in"
    assert "typed-in" not in repr(given)


def test_bad_port_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SUPERSET_PORT='web'"):
        DashboardUrls.from_env({"STATE_DIR": str(tmp_path), "SUPERSET_PORT": "web"})
