"""Resolve a service's jars with Maven once; a stamp keyed on the pom makes later runs free."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from infra.errors import InstallError

POM_DIR = Path(__file__).resolve().parent / "maven"


def resolve_jars(service: str, jars_root: Path) -> Path:
    """Copy ``service``'s runtime jars into ``jars_root/service`` (skipped when up to date)."""
    pom = POM_DIR / service / "pom.xml"
    target = jars_root / service
    stamp = target / ".pom.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest and any(target.glob("*.jar")):
        return target
    mvn = shutil.which("mvn")
    if not mvn:
        raise InstallError("Maven (mvn) not found; install it (apt-get install maven)")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    print(f"infra: resolving {service} jars with Maven into {target} ...", flush=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(pom), "package", f"-Dlib.dir={target}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        errors = [line for line in result.stdout.splitlines() if "ERROR" in line][:3]
        raise InstallError(f"Maven could not resolve {service} jars: {' | '.join(errors)}")
    stamp.write_text(digest)
    return target
