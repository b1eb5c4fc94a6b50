"""apt_install: the one way infra installs a missing package (Chromium, docker-compose)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from infra import tools
from infra.errors import InstallError


def test_without_root_or_sudo_the_error_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(InstallError) as caught:
        tools.apt_install("docker-compose", "--no-install-recommends", missing="no compose")
    assert str(caught.value) == (
        "no compose; installing it needs root: run "
        "`sudo apt-get install --no-install-recommends -y docker-compose`"
    )
    with pytest.raises(InstallError) as caught:
        tools.apt_install("chromium", missing="no Chromium", alternative=" or set CHROMIUM_PATH")
    assert str(caught.value).endswith("`sudo apt-get install -y chromium` or set CHROMIUM_PATH")


def test_a_failed_install_updates_the_index_and_tries_once_more(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        assert kwargs["env"]["DEBIAN_FRONTEND"] == "noninteractive"
        return subprocess.CompletedProcess(argv, 100 if len(calls) == 1 else 0, "", "")

    monkeypatch.setattr(tools.os, "geteuid", lambda: 0)
    monkeypatch.setattr(tools.subprocess, "run", run)
    result = tools.apt_install("chromium", missing="no Chromium", size=" (about 150 MB)")
    assert result.returncode == 0
    assert calls == [
        ["apt-get", "install", "-y", "chromium"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "chromium"],
    ]
    assert capsys.readouterr().out == "infra: installing chromium with apt-get (about 150 MB) ...\n"
