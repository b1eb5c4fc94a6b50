"""Apache Superset 6.1 over Trino: its own virtualenv, gunicorn on loopback, dashboards as code.

Superset pins (SQLAlchemy 1.4, pandas 2.1, ...) clash with the project's venv, so it lives in
``.cache/superset-venv`` (outside STATE_DIR: ``make clean`` must not force a reinstall), installed
from the fully pinned ``dashboards/superset/requirements.txt``. Its metadata (SQLite), config,
secret key and logs live under ``$STATE_DIR/superset``. After start the bundle in
``dashboards/superset/bundle`` is rendered and imported (upsert by uuid), and the service counts as
healthy only when a provisioned chart's data query answers through Trino.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from infra import process
from infra.cassandra import write_env_file
from infra.config import InfraConfig
from infra.errors import InstallError, ServiceStartError
from infra.service import ManagedProcess
from infra.trino import CATALOG
from schemas.markets import market_of
from schemas.settings import (
    CREDENTIALS_FILE_NAME,
    REPO_ROOT,
    CassandraSettings,
    SettingsError,
    env_value,
    load_credentials_file,
)

SUPERSET_VERSION = "6.1.0"
SUPERSET_DIR = REPO_ROOT / "dashboards" / "superset"
REQUIREMENTS = SUPERSET_DIR / "requirements.txt"
CONFIG_TEMPLATE = SUPERSET_DIR / "superset_config.py.in"
PROVISION_SCRIPT = SUPERSET_DIR / "provision.py"
# Trino needs no password on plain http; the name shows in Trino's query log.
TRINO_USER = "superset"
MIN_PASSWORD_LENGTH = 8
# Two gthread workers: a browser sends a dashboard's chart requests six at a time (its HTTP/1.1
# connections per host), and one worker's GIL serialised their Python side (~17 s for ten, one
# after the other, on a loaded box); two processes use both cores, and each holds its own copy of
# the app (~380 MB), which 24 GiB affords.
GUNICORN_WORKERS = 2
GUNICORN_THREADS = 8


def split_symbols(symbols: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(crypto, stocks) in the given order.

    >>> split_symbols(("BINANCE:BTCUSDT", "AAPL", "COINBASE:ETH-USD", "MSFT"))
    (['BINANCE:BTCUSDT', 'COINBASE:ETH-USD'], ['AAPL', 'MSFT'])
    """
    # one classification of symbols for every service (schemas.markets)
    crypto = [s for s in symbols if market_of(s) == "crypto"]
    return crypto, [s for s in symbols if s not in crypto]


def configured_symbols(env: Mapping[str, str]) -> tuple[str, ...]:
    """The collector's symbol list (``SYMBOLS`` or its defaults)."""
    from collector.config import parse_symbols
    from collector.exceptions import ConfigError

    try:
        return parse_symbols(env_value(env, "SYMBOLS"))
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Serialise a slow step between concurrent ``python -m infra`` runs (tests start ``up``
    in parallel sessions)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_superset(config: InfraConfig) -> Path:
    """Create the venv and install the pinned requirements, unless the stamp says they are there.

    Returns the venv. A changed requirements file (new digest) reinstalls from scratch, so no
    package of the old set lingers.
    """
    venv = config.superset_venv
    with exclusive(venv.with_name(venv.name + ".lock")):
        return _install(venv)


def _install(venv: Path) -> Path:
    stamp = venv / ".requirements.sha256"
    digest = file_digest(REQUIREMENTS)
    if stamp.exists() and stamp.read_text().strip() == digest and (venv / "bin/gunicorn").exists():
        return venv
    log = venv.with_name(venv.name + "-install.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    uv = process.venv_bin(
        "uv",
        lambda path: InstallError(
            f"superset: uv not found at {path} (it is in the dev extras: make install installs it)"
        ),
    )
    print(
        f"infra: installing Superset {SUPERSET_VERSION} into {venv} from "
        f"{REQUIREMENTS} (under a minute; log: {log}) ...",
        flush=True,
    )
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    with open(log, "w") as out:
        # The interpreter of the project's venv is a Python 3.11, which Superset 6.1 supports.
        # uv installs the same pinned set as pip, several times faster (Makefile, UV_REQUIREMENT);
        # compiled at install, as pip does: with PYTHONDONTWRITEBYTECODE set, every start would
        # compile Superset's modules again.
        for step, argv in (
            (
                "creating the virtualenv",
                [sys.executable, "-m", "venv", "--without-pip", str(venv)],
            ),
            (
                "uv pip install -r requirements.txt",
                [
                    str(uv),
                    *("pip", "install", "--no-progress", "--compile-bytecode"),
                    *("--python", str(venv / "bin/python")),
                    *("-r", str(REQUIREMENTS)),
                ],
            ),
        ):
            print(f"infra: superset: {step} ...", flush=True)
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False
            )
            if result.returncode != 0:
                raise InstallError(
                    f"superset: {step} failed (exit {result.returncode}): "
                    f"{_last_line(log)} (full log: {log})"
                )
    stamp.write_text(digest)
    print(
        f"infra: Superset {SUPERSET_VERSION} installed in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return venv


def _last_line(path: Path) -> str:
    lines = [line for line in process.tail(path, 20).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1].strip()


def admin_credentials(env: Mapping[str, str], credentials_file: Path) -> tuple[str, str]:
    """The admin's user and password: ``SUPERSET_ADMIN_USER``/``SUPERSET_ADMIN_PASSWORD``, else
    the values in ``credentials_file``; a missing password is generated and merged into that file
    (mode 600, the other keys kept). There is no default password."""
    stored = load_credentials_file(credentials_file)
    user = env_value(env, "SUPERSET_ADMIN_USER") or stored.get("SUPERSET_ADMIN_USER") or "admin"
    password = env_value(env, "SUPERSET_ADMIN_PASSWORD")
    if password is not None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise SettingsError(
                f"SUPERSET_ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters"
            )
        return user, password
    password = stored.get("SUPERSET_ADMIN_PASSWORD")
    if not password:
        password = secrets.token_urlsafe(18)
        write_env_file(
            credentials_file,
            {
                **stored,
                "SUPERSET_ADMIN_USER": user,
                "SUPERSET_ADMIN_PASSWORD": password,
            },
        )
        # write_env_file sets the mode only when it creates the file.
        credentials_file.chmod(0o600)
    return user, password


def ensure_secret_key(path: Path) -> None:
    """A random SECRET_KEY, created once (mode 600): it signs sessions and encrypts the stored
    database URIs, so it must survive restarts."""
    if path.exists() and path.read_text().strip():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48) + "\n")


def render_config(secret_key_file: Path, database: Path, data_dir: Path, chart_cache_s: int) -> str:
    """superset_config.py; chart data is cached for ``chart_cache_s`` seconds (the dashboard's
    auto-refresh period)."""
    values = {
        "secret_key_file": repr(str(secret_key_file)),
        "database_uri": repr(f"sqlite:///{database}?check_same_thread=false"),
        "data_dir": repr(str(data_dir)),
        "chart_cache_s": repr(int(chart_cache_s)),
    }
    text = CONFIG_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    return text


class SupersetClient:
    """The few REST calls infra makes: JWT login, then GETs with the token."""

    def __init__(self, port: int, user: str, password: str, timeout: float = 30) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.user = user
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, None

    def login(self) -> None:
        status, body = self._request(
            "POST",
            "/api/v1/security/login",
            {
                "username": self.user,
                "password": self.password,
                "provider": "db",
                "refresh": False,
            },
        )
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise PermissionError(f"superset: login as {self.user!r} failed (HTTP {status})")
        self._token = body["access_token"]

    def get(self, path: str) -> tuple[int, Any]:
        if self._token is None:
            self.login()
        return self._request("GET", path)


class SupersetService(ManagedProcess):
    name = "superset"

    @property
    def marker(self) -> str:
        return "superset.app:create_app()"

    @property
    def ports(self) -> dict[str, int]:
        return {"http": self.config.superset_port}

    @property
    def start_timeout(self) -> float:
        return self.config.superset_start_timeout

    @property
    def main_log(self) -> Path:
        return self.stdout_log

    @property
    def config_file(self) -> Path:
        return self.home / "superset_config.py"

    @property
    def secret_key_file(self) -> Path:
        return self.home / "secret_key"

    @property
    def database(self) -> Path:
        return self.data_dir / "superset.db"

    @property
    def bootstrap_stamp(self) -> Path:
        return self.home / ".bootstrapped"

    @property
    def provisioned_file(self) -> Path:
        """Ids of the imported objects by uuid, written by each import."""
        return self.home / "provisioned.json"

    @property
    def credentials_file(self) -> Path:
        return self.config.state_dir / CREDENTIALS_FILE_NAME

    def admin(self) -> tuple[str, str]:
        return admin_credentials(os.environ, self.credentials_file)

    def install(self) -> Path:
        return install_superset(self.config)

    def start(self) -> bool:
        # Install and first-start bootstrap take minutes; a second `up` meanwhile must wait and
        # then find the server running, not start another one.
        with exclusive(self.config.state_dir / "superset.lock"):
            return super().start()

    def superset_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("SUPERSET_ADMIN_PASSWORD", "PYTHONPATH", "VIRTUAL_ENV")
        }
        venv = self.config.superset_venv
        return {
            **env,
            "SUPERSET_CONFIG_PATH": str(self.config_file),
            # Else the first command creates ~/.superset, outside the project.
            "SUPERSET_HOME": str(self.data_dir),
            "FLASK_APP": "superset",
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        }

    def _run(
        self, label: str, argv: list[str], env: dict[str, str], log: Path, timeout: float = 300
    ) -> None:
        started = time.monotonic()
        print(f"infra: superset: {label} ...", flush=True)
        with open(log, "a") as out:
            out.write(f"\n=== {label}: {' '.join(argv)}\n")
            out.flush()
            try:
                result = subprocess.run(
                    argv,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                    cwd=self.home,
                )
            except subprocess.TimeoutExpired:
                raise ServiceStartError(
                    f"superset: {label} did not finish in {timeout:.0f} s", process.tail(log, 30)
                ) from None
        if result.returncode != 0:
            raise ServiceStartError(
                f"superset: {label} failed (exit {result.returncode})", process.tail(log, 30)
            )
        print(f"infra: superset: {label} done in {time.monotonic() - started:.0f} s", flush=True)

    def bootstrap(self, env: dict[str, str]) -> None:
        """Migrate the metadata database, create roles and the admin: on the first start and
        again after the pinned Superset changes (the stamp holds the requirements' digest)."""
        digest = file_digest(REQUIREMENTS)
        if self.bootstrap_stamp.exists() and self.bootstrap_stamp.read_text().strip() == digest:
            return
        venv_bin = self.config.superset_venv / "bin"
        log = self.log_dir / "bootstrap.log"
        user, password = self.admin()
        self._run(
            "migrating the metadata database (superset db upgrade)",
            [str(venv_bin / "superset"), "db", "upgrade"],
            env,
            log,
        )
        self._run(
            "creating roles and permissions (superset init)",
            [str(venv_bin / "superset"), "init"],
            env,
            log,
        )
        self._run(
            f"creating the admin user {user!r}",
            [str(venv_bin / "python"), str(PROVISION_SCRIPT), "admin"],
            {**env, "SUPERSET_ADMIN_USER": user, "SUPERSET_ADMIN_PASSWORD": password},
            log,
        )
        self.bootstrap_stamp.write_text(digest)

    def launch(self) -> tuple[list[str], dict[str, str]]:
        venv = self.install()
        for folder in (self.home, self.data_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        ensure_secret_key(self.secret_key_file)
        self.config_file.write_text(
            render_config(
                self.secret_key_file,
                self.database,
                self.data_dir,
                self.config.superset_refresh_s,
            )
        )
        env = self.superset_env()
        self.bootstrap(env)
        self.make_metadata_private()
        argv = [
            str(venv / "bin/python"),
            str(venv / "bin/gunicorn"),
            "--bind",
            f"127.0.0.1:{self.config.superset_port}",
            "--workers",
            str(GUNICORN_WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            str(GUNICORN_THREADS),
            "--timeout",
            "60",
            "--keep-alive",
            "2",
            # Explore and dashboard GETs carry long rison/form_data URLs.
            "--limit-request-line",
            "0",
            "--limit-request-field_size",
            "0",
            # gunicorn 27 otherwise opens ~/.gunicorn/gunicorn.ctl, shared by every gunicorn.
            "--no-control-socket",
            "--error-logfile",
            "-",
            "superset.app:create_app()",
        ]
        return argv, env

    def server_up(self) -> bool:
        """The app answers /health (cheap; what ``up`` waits for before importing)."""
        return process.http_body_is(f"http://127.0.0.1:{self.config.superset_port}/health", b"OK")

    def wait_ready(self, timeout: float) -> float:
        # The base class polls answers(), which needs the imported bundle; after_ready imports
        # it only once the server is up, so wait for /health here instead.
        start = time.monotonic()
        while time.monotonic() < start + timeout:
            if self.pid() is None:
                raise ServiceStartError("superset exited during start-up", self.last_log_lines())
            if self.server_up():
                return time.monotonic() - start
            time.sleep(1)
        raise ServiceStartError(
            f"superset did not answer within {timeout:.0f} s", self.last_log_lines()
        )

    def provisioned(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.provisioned_file.read_text())
        except (OSError, ValueError):
            return None

    def chart_data(self, chart_id: int, client: SupersetClient | None = None) -> tuple[int, Any]:
        """The chart's data from a fresh query: force=true passes by the results cache, so the
        answer shows that Trino answers now."""
        user, password = self.admin()
        client = client or SupersetClient(self.config.superset_port, user, password)
        return client.get(f"/api/v1/chart/{chart_id}/data/?force=true")

    def answers(self) -> bool:
        """Healthy only when a provisioned chart's saved query runs through Trino."""
        state = self.provisioned()
        if not state or not self.server_up():
            return False
        try:
            status, body = self.chart_data(int(state["health_chart_id"]))
        except (OSError, PermissionError, KeyError, ValueError, SettingsError):
            return False
        return status == 200 and isinstance(body, dict) and bool(body.get("result"))

    def bundle_params(self) -> dict[str, Any]:
        crypto, stocks = split_symbols(configured_symbols(os.environ))
        return {
            "trino_uri": f"trino://{TRINO_USER}@127.0.0.1:{self.config.trino_port}/{CATALOG}",
            "catalog": CATALOG,
            "keyspace": CassandraSettings.from_env().keyspace,
            "crypto_symbols": crypto,
            "stock_symbols": stocks,
            "refresh_s": self.config.superset_refresh_s,
        }

    def import_bundle(self) -> dict[str, Any]:
        """Render the bundle with the current settings and import it (upsert by uuid)."""
        params_file = self.home / "bundle-params.json"
        params_file.write_text(json.dumps(self.bundle_params(), indent=2))
        user, password = self.admin()
        env = {
            **self.superset_env(),
            "SUPERSET_ADMIN_USER": user,
            "SUPERSET_ADMIN_PASSWORD": password,
        }
        argv = [
            str(self.config.superset_venv / "bin/python"),
            str(PROVISION_SCRIPT),
            "import",
            "--url",
            f"http://127.0.0.1:{self.config.superset_port}",
            "--params",
            str(params_file),
            "--bundle",
            str(self.home / "bundle.zip"),
            "--out",
            str(self.provisioned_file),
        ]
        log = self.log_dir / "provision.log"
        with open(log, "a") as out:
            result = subprocess.run(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise ServiceStartError(
                f"superset: importing dashboards/superset/bundle failed: {_last_line(log)}",
                process.tail(log, 30),
            )
        state = self.provisioned()
        if state is None:
            raise ServiceStartError(
                f"superset: the import wrote no {self.provisioned_file}", process.tail(log, 30)
            )
        return state

    def make_metadata_private(self) -> None:
        """The metadata database holds the logins' password hashes and session data: owner
        only, like the secret key (SQLite gives its journal files the database's mode)."""
        self.data_dir.chmod(0o700)
        if self.database.exists():
            self.database.chmod(0o600)

    def after_ready(self) -> None:
        self.make_metadata_private()  # every up: a state dir from before this check included
        started = time.monotonic()
        with exclusive(self.config.state_dir / "superset.lock"):
            state = self.import_bundle()
        print(
            f"infra: superset: dashboards imported in {time.monotonic() - started:.0f} s "
            f"({len(state['charts'])} charts; http://127.0.0.1:{self.config.superset_port}"
            f"/superset/dashboard/{state['dashboard_slug']}/)",
            flush=True,
        )
        status, body = self.chart_data(int(state["health_chart_id"]))
        if status != 200:
            message = body.get("message") if isinstance(body, dict) else body
            raise ServiceStartError(
                f"superset: chart {state['health_chart_id']} cannot query Trino "
                f"(HTTP {status}: {str(message)[:200]})",
                self.last_log_lines(),
            )
