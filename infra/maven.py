"""Resolve a service's artifacts with Maven once; a stamp keyed on the pom makes later runs free."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from infra.errors import InstallError

POM_DIR = Path(__file__).resolve().parent / "maven"


def pom_digest(service: str) -> str:
    return hashlib.sha256((POM_DIR / service / "pom.xml").read_bytes()).hexdigest()


def run_maven(service: str, target: Path) -> None:
    """``mvn package`` on ``service``'s pom, which copies its artifacts into ``target``."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise InstallError("Maven (mvn) not found; install it (apt-get install maven)")
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM_DIR / service / "pom.xml"),
            "package",
            f"-Dlib.dir={target}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        errors = [line for line in result.stdout.splitlines() if "ERROR" in line][:3]
        raise InstallError(f"Maven could not resolve {service} artifacts: {' | '.join(errors)}")


def resolve_jars(service: str, jars_root: Path) -> Path:
    """Copy ``service``'s runtime jars into ``jars_root/service`` (skipped when up to date)."""
    target = jars_root / service
    stamp = target / ".pom.sha256"
    digest = pom_digest(service)
    if stamp.exists() and stamp.read_text().strip() == digest and any(target.glob("*.jar")):
        return target
    if target.exists():
        shutil.rmtree(target)
    print(f"infra: resolving {service} jars with Maven into {target} ...", flush=True)
    run_maven(service, target)
    stamp.write_text(digest)
    return target
