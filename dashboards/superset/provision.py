"""Superset provisioning, run by the Superset venv's python (``python -m infra up`` calls it).

``provision.py admin``
    Create the admin user, or reset its password, from ``SUPERSET_ADMIN_USER`` /
    ``SUPERSET_ADMIN_PASSWORD`` (inside the app: no password on a command line).
``provision.py import --url URL --params P.json --bundle B.zip --out O.json [--templates DIR]``
    Render ``bundle/`` (or DIR) with the settings in P.json, import it through ``POST
    /api/v1/assets/import/`` (every object updated in place by uuid) and write the ids of the
    imported objects to O.json.

Errors end in one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml

if TYPE_CHECKING:
    from dashboards.superset import bundle
else:
    # Superset's virtualenv runs this file as a script, without this repository installed.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bundle


class ProvisionError(Exception):
    pass


def admin_from_env() -> tuple[str, str]:
    user = os.environ.get("SUPERSET_ADMIN_USER", "").strip()
    password = os.environ.get("SUPERSET_ADMIN_PASSWORD", "")
    if not user or not password:
        raise ProvisionError("SUPERSET_ADMIN_USER and SUPERSET_ADMIN_PASSWORD must be set")
    return user, password


def cmd_admin(_: argparse.Namespace) -> None:
    from superset.app import create_app

    user, password = admin_from_env()
    app = create_app()
    with app.app_context():
        sm = app.appbuilder.sm
        role = sm.find_role(sm.auth_role_admin)
        if role is None:
            raise ProvisionError("role Admin is missing; run `superset init` first")
        existing = sm.find_user(username=user)
        if existing is None:
            if not sm.add_user(
                user, "Superset", "Admin", f"{user}@localhost.localdomain", role, password=password
            ):
                raise ProvisionError(f"could not create the admin user {user!r}")
            print(f"created admin user {user!r}")
        else:
            sm.reset_password(existing.id, password)
            print(f"admin user {user!r} exists; password set from the environment")


class Api:
    """JWT login plus the CSRF token that Flask-WTF wants on every REST POST."""

    def __init__(self, url: str, user: str, password: str) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        response = self.session.post(
            f"{self.url}/api/v1/security/login",
            json={"username": user, "password": password, "provider": "db", "refresh": False},
            timeout=30,
        )
        if response.status_code != 200:
            raise ProvisionError(f"login as {user!r} failed (HTTP {response.status_code})")
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        token = self.get("/api/v1/security/csrf_token/")["result"]
        self.session.headers["X-CSRFToken"] = token
        self.session.headers["Referer"] = self.url

    def get(self, path: str) -> Any:
        response = self.session.get(self.url + path, timeout=60)
        if response.status_code != 200:
            raise ProvisionError(f"GET {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()

    def list_uuids(self, resource: str, name_column: str) -> dict[str, dict[str, Any]]:
        """{uuid: row} of every object of a kind."""
        rows: dict[str, dict[str, Any]] = {}
        page = 0
        while True:
            q = f"(columns:!(id,uuid,{name_column}),page:{page},page_size:100)"
            body = self.get(f"/api/v1/{resource}/?q={quote(q)}")
            for row in body["result"]:
                rows[str(row["uuid"])] = row
            if (page + 1) * 100 >= body["count"]:
                return rows
            page += 1

    def import_assets(self, data: bytes, name: str) -> None:
        response = self.session.post(
            f"{self.url}/api/v1/assets/import/",
            files={"bundle": (name, data, "application/zip")},
            data={"passwords": "{}"},
            # A missing CSRF token shows as a redirect to /login/, not as an error.
            allow_redirects=False,
            timeout=300,
        )
        if response.status_code != 200:
            try:
                errors = response.json().get("errors") or [response.json()]
                detail = "; ".join(str(e.get("message", e)) for e in errors)
            except ValueError:
                detail = response.text[:200]
            raise ProvisionError(f"assets import: HTTP {response.status_code}: {detail}")


def cmd_import(args: argparse.Namespace) -> None:
    params = json.loads(Path(args.params).read_text())
    started = time.monotonic()
    files = bundle.render(params, Path(args.templates))
    data = bundle.write_zip(files, Path(args.bundle))
    user, password = admin_from_env()
    api = Api(args.url, user, password)
    api.import_assets(data, Path(args.bundle).name)
    imported = time.monotonic() - started

    wanted: dict[str, dict[str, str]] = {
        kind: {} for kind in ("databases", "datasets", "charts", "dashboards")
    }
    for name, text in files.items():
        kind = name.split("/")[1]
        if kind in wanted:
            obj = yaml.safe_load(text)
            wanted[kind][obj["uuid"]] = name
    state: dict[str, Any] = {"digest": bundle.digest(files), "import_seconds": round(imported, 2)}
    for kind, resource, column in (
        ("databases", "database", "database_name"),
        ("datasets", "dataset", "table_name"),
        ("charts", "chart", "slice_name"),
        ("dashboards", "dashboard", "dashboard_title"),
    ):
        found = api.list_uuids(resource, column)
        missing = sorted(set(wanted[kind]) - set(found))
        if missing:
            raise ProvisionError(
                f"after the import {len(missing)} {kind} are missing: "
                + ", ".join(wanted[kind][u] for u in missing)
            )
        state[kind] = {u: found[u]["id"] for u in sorted(wanted[kind])}
    dashboard_uuid = bundle.stable_uuid("dashboard/market_overview")
    state["dashboard_id"] = state["dashboards"][dashboard_uuid]
    state["dashboard_slug"] = bundle.DASHBOARD_SLUG
    # Health check: the cheapest chart (a few hundred backtest rows) of the first section.
    section = next(
        s
        for s in bundle.SECTIONS
        if bundle.stable_uuid(f"chart/backtest_coverage/{s}") in state["charts"]
    )
    state["health_chart_id"] = state["charts"][
        bundle.stable_uuid(f"chart/backtest_coverage/{section}")
    ]
    Path(args.out).write_text(json.dumps(state, indent=2, sort_keys=True))
    print(
        f"imported {len(files)} files in {imported:.1f} s: "
        + ", ".join(f"{len(state[k])} {k}" for k in wanted)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provision.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("admin").set_defaults(fn=cmd_admin)
    sp = sub.add_parser("import")
    sp.add_argument("--url", required=True)
    sp.add_argument("--params", required=True)
    sp.add_argument("--bundle", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument(
        "--templates",
        default=str(bundle.TEMPLATES),
        help="folder of YAML templates (default: bundle/ beside this script)",
    )
    sp.set_defaults(fn=cmd_import)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (ProvisionError, bundle.TemplateError, OSError) as exc:
        print(f"provision: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
