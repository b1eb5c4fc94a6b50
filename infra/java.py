"""Locate Java runtimes: Kafka 4.x needs >= 17, Cassandra 5.0 runs on 17 only, Trino 476 needs
>= 24."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from infra.errors import JavaNotFoundError

DEFAULT_CANDIDATES = (
    "/usr/lib/jvm/java-17-openjdk-amd64",
    "/usr/lib/jvm/java-17-openjdk-arm64",
    "/usr/lib/jvm/openjdk-17",
)


def java_major_version(java: Path) -> int:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except OSError as exc:
        raise JavaNotFoundError(f"cannot run {java}: {exc.strerror}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise JavaNotFoundError(f"cannot read the version printed by {java} -version")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java17(java17_home: str | None) -> Path:
    """Return the path of a Java 17 ``java`` binary or raise naming what is missing.

    :param java17_home: JAVA17_HOME if set; then it must hold a Java 17 and nothing else is tried.
    """
    if java17_home:
        java = Path(java17_home) / "bin" / "java"
        if not java.exists():
            raise JavaNotFoundError(
                f"JAVA17_HOME={java17_home} has no bin/java; install OpenJDK 17 "
                "(apt-get install openjdk-17-jdk-headless) or point JAVA17_HOME at one"
            )
        major = java_major_version(java)
        if major != 17:
            raise JavaNotFoundError(
                f"JAVA17_HOME={java17_home} is Java {major}; Cassandra 5.0 needs Java 17"
            )
        return java
    candidates = [Path(c) / "bin" / "java" for c in DEFAULT_CANDIDATES]
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    for java in candidates:
        if java.exists() and java_major_version(java) == 17:
            return java
    raise JavaNotFoundError(
        "no Java 17 found (looked in /usr/lib/jvm and PATH); install OpenJDK 17 "
        "(apt-get install openjdk-17-jdk-headless) or set JAVA17_HOME"
    )


JVM_DIR = Path("/usr/lib/jvm")


def find_java_at_least(minimum: int, home: str | None, home_variable: str, needed_by: str) -> Path:
    """Return a ``java`` of version ``minimum`` or newer: ``home`` when set (and nothing else),
    else the newest under /usr/lib/jvm."""
    if home:
        java = Path(home) / "bin" / "java"
        if not java.exists():
            raise JavaNotFoundError(f"{home_variable}={home} has no bin/java")
        major = java_major_version(java)
        if major < minimum:
            raise JavaNotFoundError(
                f"{home_variable}={home} is Java {major}; {needed_by} needs Java {minimum}+"
            )
        return java
    found = []
    for java in JVM_DIR.glob("*/bin/java") if JVM_DIR.is_dir() else ():
        if not java.parent.parent.is_symlink():
            major = java_major_version(java)
            if major >= minimum:
                found.append((major, java))
    if not found:
        raise JavaNotFoundError(
            f"no Java {minimum}+ found under {JVM_DIR} for {needed_by}; install one (for example "
            f"Temurin 25) or set {home_variable}"
        )
    return max(found)[1]
