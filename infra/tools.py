"""The deploy artefacts' validators: helm, an offline Kubernetes schema check and docker-compose.

``python -m infra.tools install`` (run by ``make install``):

- builds helm ``HELM_VERSION`` from the Go module proxy with ``go install`` into
  ``.cache/tools/helm-<version>/helm``, skipped when that binary is there (the first build
  downloads the Kubernetes client modules and compiles for several minutes on 2 cores);
- installs Debian's ``docker-compose`` with apt-get when it is missing (``docker-compose
  config`` reads, interpolates and checks a compose file without a Docker engine).

The Kubernetes schemas come with the ``kubernetes-validate`` package (dev extras): no download.

``python -m infra.tools check`` runs every validation on ``infra/helm`` and
``infra/compose/docker-compose.yml`` and exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from infra.errors import InfraError, InstallError

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO_ROOT / ".cache" / "tools"
HELM_MODULE = "helm.sh/helm/v4/cmd/helm"
HELM_VERSION = "v4.3.1"
CHART_DIR = REPO_ROOT / "infra" / "helm"
COMPOSE_FILE = REPO_ROOT / "infra" / "compose" / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = COMPOSE_FILE.parent / ".env.example"
# The Kubernetes version the chart is rendered for and validated against.
KUBE_VERSION = "1.34"
# Values that fill every required value of the chart (the Secret's name, image, addresses):
# what `helm install` is given on a real cluster, with placeholder secrets.
CHART_TEST_VALUES = CHART_DIR / "ci-values.yaml"
COMPOSE_APT_PACKAGE = "docker-compose"


class ValidationFailed(InfraError):
    """A validator rejected a manifest; the message has its own output."""


def helm_path() -> Path:
    return TOOLS_DIR / f"helm-{HELM_VERSION}" / "helm"


def _go() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        raise InstallError(
            "Go not found (needed once to build helm): install Go 1.26+ and put `go` on PATH"
        )
    return go


def ensure_helm() -> Path:
    """The helm binary, built once with ``go install`` from the Go module proxy."""
    target = helm_path()
    if target.is_file() and os.access(target, os.X_OK):
        return target
    print(
        f"infra: building helm {HELM_VERSION} with go install (a few minutes, once) ...", flush=True
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
        result = subprocess.run(
            [_go(), "install", "-trimpath", "-ldflags=-s -w", f"{HELM_MODULE}@{HELM_VERSION}"],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
            env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"},
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise InstallError(
                f"go install {HELM_MODULE}@{HELM_VERSION} failed: {' | '.join(tail)}"
            )
        # Atomic: an interrupted build never leaves a half-written binary behind.
        os.replace(Path(gobin) / "helm", target)
    return target


def compose_path() -> Path | None:
    found = shutil.which("docker-compose")
    return Path(found) if found else None


def ensure_compose() -> Path:
    """``docker-compose`` (1.x, Debian's package), installed with apt-get when missing."""
    found = compose_path()
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        raise InstallError("docker-compose not found and no apt-get: install docker-compose 1.29+")
    # --no-install-recommends: the package recommends Debian's Docker engine, not needed here.
    result = apt_install(
        COMPOSE_APT_PACKAGE, "--no-install-recommends", missing="docker-compose not found"
    )
    found = compose_path()
    if result.returncode != 0 or found is None:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise InstallError(f"apt-get install {COMPOSE_APT_PACKAGE} failed: {lines[-1:] or '?'}")
    return found


def apt_install(
    package: str, *options: str, missing: str, alternative: str = "", size: str = ""
) -> subprocess.CompletedProcess[str]:
    """``apt-get install -y [options] package`` as root, or through ``sudo -n`` when that needs
    no password; when it fails (most often a stale package index), ``apt-get update`` and once
    more. The last attempt's result: the caller checks what it installed.

    :param missing: what is missing, the start of the error when root is out of reach
    :param alternative: the user's other way out, added to that error (``" or set X"``)
    :param size: about how much it downloads, for the progress line (``" (about 150 MB)"``)
    :raises InstallError: neither root nor ``sudo`` without a password
    """
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and _ran_ok(["sudo", "-n", "true"]):
        prefix = ["sudo", "-n"]
    else:
        raise InstallError(
            f"{missing}; installing it needs root: run "
            f"`sudo apt-get install {' '.join([*options, '-y', package])}`{alternative}"
        )
    print(f"infra: installing {package} with apt-get{size} ...", flush=True)

    def apt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, "apt-get", *args],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )

    result = apt("install", "-y", *options, package)
    if result.returncode != 0:
        apt("update")
        result = apt("install", "-y", *options, package)
    return result


def _ran_ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _helm_env() -> dict[str, str]:
    # helm's cache, config and data folders inside the tool cache, not in $HOME.
    home = TOOLS_DIR / "helm-home"
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def _run(argv: list[str], what: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, env=env)
    if result.returncode != 0:
        raise ValidationFailed(f"{what} failed:\n{result.stdout}{result.stderr}".rstrip())
    return result.stdout


def helm_lint(chart: Path = CHART_DIR, values: Path = CHART_TEST_VALUES) -> str:
    """``helm lint --strict`` (warnings fail too) with ``values``."""
    return _run(
        [
            str(helm_path()),
            "lint",
            "--strict",
            str(chart),
            "-f",
            str(values),
            "--kube-version",
            KUBE_VERSION,
        ],
        "helm lint",
        _helm_env(),
    )


def helm_template(chart: Path = CHART_DIR, values: Path = CHART_TEST_VALUES) -> str:
    """The chart's manifests as ``helm install`` would send them."""
    return _run(
        [
            str(helm_path()),
            "template",
            "tdp",
            str(chart),
            "-f",
            str(values),
            "--namespace",
            "market",
            "--kube-version",
            KUBE_VERSION,
        ],
        "helm template",
        _helm_env(),
    )


def documents(text: str) -> Iterator[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    for doc in yaml.safe_load_all(text):
        if doc:
            yield doc


def validate_kubernetes(text: str, version: str = KUBE_VERSION) -> list[str]:
    """Each resource of ``text`` checked against the Kubernetes ``version`` schemas (strict: an
    unknown field is an error); one line per rejected resource, empty when all pass."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    errors = []
    for doc in documents(text):
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
        except SchemaNotFoundError as exc:
            errors.append(f"{name}: no schema ({exc})")
    return errors


def compose_config(
    compose_file: Path = COMPOSE_FILE, env_file: Path = COMPOSE_ENV_EXAMPLE
) -> dict[str, Any]:
    """``docker-compose config`` on the file with ``env_file``'s values: the resolved model
    (schema, interpolation and references checked; no Docker engine involved)."""
    compose = compose_path()
    if compose is None:
        raise ValidationFailed("docker-compose not found: run `make install`")
    out = _run(
        [
            str(compose),
            "--project-directory",
            str(compose_file.parent),
            "-f",
            str(compose_file),
            "--env-file",
            str(env_file),
            "config",
        ],
        "docker-compose config",
        # Only the env file: no variable of the caller's shell leaks into the check.
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(TOOLS_DIR)},
    )
    model = yaml.safe_load(out)
    if not isinstance(model, dict):
        raise ValidationFailed("docker-compose config printed no model")
    return model


def check() -> None:
    print(helm_lint().strip().splitlines()[-1])
    if errors := validate_kubernetes(helm_template()):
        raise ValidationFailed("the chart's manifests:\n" + "\n".join(errors))
    print(f"helm template: every resource valid for Kubernetes {KUBE_VERSION}")
    services = compose_config()["services"]
    print(f"docker-compose config: {len(services)} services valid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.tools", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["install", "check"])
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(f"infra: helm ready at {ensure_helm()}")
            print(f"infra: docker-compose ready at {ensure_compose()}")
        else:
            check()
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
