"""The pure parts of infra/superset.py: credentials, secret key, config file, install errors."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from infra import superset
from infra.config import InfraConfig
from infra.errors import InstallError
from infra.superset import (
    SupersetService,
    admin_credentials,
    ensure_secret_key,
    install_superset,
    render_config,
    split_symbols,
)
from schemas.settings import SettingsError, load_credentials_file
from tests.conftest import REPO_ROOT


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_admin_password_is_random_private_and_kept(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.env"
    creds.write_text("CASSANDRA_USERNAME=market_app\nCASSANDRA_PASSWORD=cass-secret\n")
    user, password = admin_credentials({}, creds)
    assert user == "admin"
    assert len(password) >= 20 and password.lower() not in ("admin", "password", "superset")
    assert mode(creds) == 0o600
    stored = load_credentials_file(creds)
    assert stored == {
        "CASSANDRA_USERNAME": "market_app",
        "CASSANDRA_PASSWORD": "cass-secret",
        "SUPERSET_ADMIN_USER": "admin",
        "SUPERSET_ADMIN_PASSWORD": password,
    }
    assert admin_credentials({}, creds) == (user, password)  # stable once generated
    other = tmp_path / "other.env"
    assert admin_credentials({}, other)[1] != password  # never a fixed default


def test_environment_wins_and_is_not_written_down(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.env"
    env = {"SUPERSET_ADMIN_USER": "boss", "SUPERSET_ADMIN_PASSWORD": "long-enough-secret"}
    assert admin_credentials(env, creds) == ("boss", "long-enough-secret")
    assert not creds.exists()


def test_short_admin_password_fails_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SUPERSET_ADMIN_PASSWORD") as info:
        admin_credentials({"SUPERSET_ADMIN_PASSWORD": "pw123"}, tmp_path / "c.env")
    assert "pw123" not in str(info.value)


def test_secret_key_is_created_once_with_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "superset" / "secret_key"
    ensure_secret_key(path)
    key = path.read_text()
    assert mode(path) == 0o600 and len(key.strip()) >= 40
    ensure_secret_key(path)
    assert path.read_text() == key


def test_config_reads_the_key_from_its_file_and_keeps_everything_under_state(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "secret_key"
    ensure_secret_key(key_file)
    text = render_config(key_file, tmp_path / "data" / "superset.db", tmp_path / "data", 30)
    assert key_file.read_text().strip() not in text
    namespace: dict[str, object] = {}
    exec(compile(text, "superset_config.py", "exec"), namespace)  # noqa: S102 - our template
    assert namespace["SECRET_KEY"] == key_file.read_text().strip()
    assert namespace["SQLALCHEMY_DATABASE_URI"] == (
        f"sqlite:///{tmp_path}/data/superset.db?check_same_thread=false"
    )
    assert namespace["DATA_DIR"] == str(tmp_path / "data")
    assert namespace["SCARF_ANALYTICS"] is False


def rendered_config(tmp_path: Path, chart_cache_s: int) -> dict[str, object]:
    key_file = tmp_path / "secret_key"
    ensure_secret_key(key_file)
    data = tmp_path / "data"
    namespace: dict[str, object] = {}
    text = render_config(key_file, data / "superset.db", data, chart_cache_s)
    exec(compile(text, "superset_config.py", "exec"), namespace)  # noqa: S102 - our template
    return namespace


def test_chart_data_is_cached_for_one_refresh_period_in_a_folder_every_worker_shares(
    tmp_path: Path,
) -> None:
    config = rendered_config(tmp_path, 45)
    assert config["DATA_CACHE_CONFIG"] == {
        "CACHE_TYPE": "FileSystemCache",  # a per-process cache would miss on the other worker
        "CACHE_DIR": str(tmp_path / "data" / "cache" / "data"),
        "CACHE_DEFAULT_TIMEOUT": 45,
        "CACHE_THRESHOLD": 1000,
    }
    # "force" would pass by the cache on every open dashboard's refresh
    assert config["DASHBOARD_AUTO_REFRESH_MODE"] == "fetch"
    metadata = config["CACHE_CONFIG"]
    assert isinstance(metadata, dict)
    assert metadata["CACHE_TYPE"] == "FileSystemCache"
    assert metadata["CACHE_DIR"] == str(tmp_path / "data" / "cache" / "metadata")


def test_without_auto_refresh_chart_data_is_not_cached(tmp_path: Path) -> None:
    # A timeout of 0 means "never expires" to Superset's caches.
    assert rendered_config(tmp_path, 0)["DATA_CACHE_CONFIG"] == {"CACHE_TYPE": "NullCache"}


def test_service_layout_and_settings(tmp_path: Path) -> None:
    config = InfraConfig.from_env(
        {
            "STATE_DIR": str(tmp_path),
            "SUPERSET_PORT": "18088",
            "SUPERSET_VENV": str(tmp_path / "venv"),
        }
    )
    service = SupersetService(config)
    assert service.ports == {"http": 18088}
    assert service.home == tmp_path / "superset"
    assert service.database.is_relative_to(tmp_path)
    assert config.superset_venv == tmp_path / "venv"
    with pytest.raises(SettingsError, match="SUPERSET_PORT='web'"):
        InfraConfig.from_env({"SUPERSET_PORT": "web"})
    with pytest.raises(SettingsError, match="SUPERSET_REFRESH='-1': expected a duration"):
        InfraConfig.from_env({"SUPERSET_REFRESH": "-1"})
    assert InfraConfig.from_env({"SUPERSET_REFRESH": "1m"}).superset_refresh_s == 60
    assert InfraConfig.from_env({"SUPERSET_REFRESH_S": "45"}).superset_refresh_s == 45  # old name


def test_symbols_setting_errors_name_the_variable() -> None:
    assert superset.configured_symbols({"SYMBOLS": "AAPL, BINANCE:BTCUSDT"}) == (
        "AAPL",
        "BINANCE:BTCUSDT",
    )
    with pytest.raises(SettingsError, match="SYMBOLS"):
        superset.configured_symbols({"SYMBOLS": " , "})
    assert split_symbols(("KRAKEN:XBTUSD", "OANDA:EUR_USD", "IBM")) == (
        ["KRAKEN:XBTUSD"],
        ["OANDA:EUR_USD", "IBM"],
    )


def test_install_failure_is_one_line_naming_the_step(tmp_path: Path, monkeypatch) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("this is not === a requirement\n")
    monkeypatch.setattr(superset, "REQUIREMENTS", requirements)
    config = InfraConfig.from_env({**os.environ, "SUPERSET_VENV": str(tmp_path / "venv")})
    with pytest.raises(InstallError) as info:
        install_superset(config)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("superset: uv pip install -r requirements.txt failed (exit ")
    assert str(tmp_path / "venv-install.log") in message
    assert not (tmp_path / "venv" / ".requirements.sha256").exists()


def test_without_uv_beside_the_interpreter_the_install_says_where_it_looked(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(superset.sys, "executable", str(tmp_path / "bin" / "python"))
    config = InfraConfig.from_env({**os.environ, "SUPERSET_VENV": str(tmp_path / "venv")})
    with pytest.raises(InstallError) as info:
        install_superset(config)
    assert str(info.value) == (
        f"superset: uv not found at {tmp_path / 'bin' / 'uv'} "
        "(it is in the dev extras: make install installs it)"
    )


def test_the_makefile_bootstraps_the_uv_that_pyproject_pins() -> None:
    # The venv's install recipe as make would run it (-n: printed, not run; -B: out of date).
    recipe = subprocess.run(
        ["make", "-n", "-B", ".venv/.installed"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    makefile = re.search(r"pip install .*'(uv==\S+)'$", recipe, re.M)
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = [r for r in extras["optional-dependencies"]["dev"] if r.startswith("uv==")]
    assert makefile is not None and pins == [makefile.group(1)]
