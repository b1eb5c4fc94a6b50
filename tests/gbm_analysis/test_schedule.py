"""The shipped schedules (crontab and Kubernetes CronJobs) parse, agree with each other, and run
commands and settings that the job accepts."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml

from gbm_analysis.__main__ import _parser
from gbm_analysis.config import GbmSettings
from tests.conftest import REPO_ROOT

SCHEDULE = REPO_ROOT / "infra" / "schedule"


def _manifests() -> list[dict[str, Any]]:
    text = (SCHEDULE / "gbm-cronjob.yaml").read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _cron_lines() -> list[tuple[str, list[str]]]:
    """(schedule, python -m gbm_analysis arguments) of every crontab entry."""
    entries = []
    for line in (SCHEDULE / "gbm.cron").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split()[0]:
            continue
        fields = line.split(maxsplit=5)
        words = shlex.split(fields[5].split(">>")[0])
        entries.append((" ".join(fields[:5]), words[words.index("gbm_analysis") + 1 :]))
    return entries


def _cronjobs() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _manifests() if d["kind"] == "CronJob"}


def test_manifests_are_a_configmap_and_three_cronjobs() -> None:
    kinds = sorted((d["apiVersion"], d["kind"]) for d in _manifests())
    assert kinds == [("batch/v1", "CronJob")] * 3 + [("v1", "ConfigMap")]
    for job in _cronjobs().values():
        spec = job["spec"]
        assert spec["concurrencyPolicy"] == "Forbid" and spec["timeZone"] == "Etc/UTC"
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        refs = [next(iter(r)) for r in container["envFrom"]]
        assert refs == ["configMapRef", "secretRef"]  # credentials only from the Secret


def test_cronjobs_and_crontab_run_the_same_commands_at_the_same_minutes() -> None:
    from_k8s = sorted(
        (
            job["spec"]["schedule"],
            job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][3:],
        )
        for job in _cronjobs().values()
    )
    assert from_k8s == sorted(_cron_lines())
    assert [s for s, _ in from_k8s] == ["1 * * * *", "20 * * * *", "5 * * * *"]


@pytest.mark.parametrize("source", ["cron", "k8s"])
def test_scheduled_commands_parse(source: str) -> None:
    commands = (
        [args for _, args in _cron_lines()]
        if source == "cron"
        else [
            j["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][3:]
            for j in _cronjobs().values()
        ]
    )
    for args in commands:
        parsed = _parser().parse_args(args)
        assert parsed.command in ("run", "backtest", "drift")
        if parsed.command == "drift":  # drift past the threshold retrains, unattended
            assert parsed.retrain


def test_configmap_settings_are_accepted_and_carry_no_secret() -> None:
    (config,) = [d for d in _manifests() if d["kind"] == "ConfigMap"]
    data = {key: str(value) for key, value in config["data"].items()}
    assert not any("PASSWORD" in key or "TOKEN" in key for key in data)
    settings = GbmSettings.from_env(data)
    assert (settings.lookback_seconds, settings.step_seconds, settings.n_steps) == (21_600, 60, 60)
    assert settings.n_paths == 10_000 and settings.models == ("gbm", "ewma_t", "hist_sim")


def test_crontab_locks_and_logs_stay_inside_the_checkout() -> None:
    for line in (SCHEDULE / "gbm.cron").read_text(encoding="utf-8").splitlines():
        if "gbm_analysis" in line and not line.startswith("#"):
            assert "flock -n .state/" in line and ">> .state/logs/" in line
