"""The deploy artefacts validate with the real tools, and set only settings of ours.

The Helm chart (infra/helm) goes through ``helm lint --strict`` and ``helm template`` (helm built
from the Go module proxy by ``make install``), each rendered resource through the Kubernetes
schemas of ``kubernetes-validate`` (strict: unknown fields fail), and the compose file through
``docker-compose config`` (schema, interpolation, references). Each check is also shown failing
on a broken input. The tests marked ``integration`` need those tools (``make install``), not the
stack.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import tools

REPO_ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGES = ("collector", "stream_processor", "gbm_analysis", "dashboards", "schemas", "infra")
needs_tools = pytest.mark.integration


@pytest.fixture(scope="module")
def helm() -> Path:
    path = tools.helm_path()
    if not path.exists():
        pytest.fail(f"helm is not built ({path}): run `make install`")
    return path


@pytest.fixture(scope="module")
def rendered(helm: Path) -> list[dict[str, Any]]:
    return list(tools.documents(tools.helm_template()))


@pytest.fixture(scope="module")
def compose_model() -> dict[str, Any]:
    if tools.compose_path() is None:
        pytest.fail("docker-compose is not installed: run `make install`")
    return tools.compose_config()


# --- the settings of ours ----------------------------------------------------------------------


def readme_variables() -> set[str]:
    """Every variable named in the first column of the README's table of variables."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            # "(formerly `OLD`)" names a setting no longer read.
            first_cell = re.sub(r"\(formerly[^)]*\)", "", line.split("|")[1])
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def code_text() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for package in OUR_PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
    )


# Cached: the checks ask once per service and container, and reading and scanning every source
# file each time took most of this module's 2 minutes on the loaded 2-core machine.
@functools.cache
def our_settings() -> frozenset[str]:
    """Documented in the README's table and named in our code (read there, directly or as a
    role prefix + USERNAME/PASSWORD)."""
    code = code_text()
    prefixes = set(re.findall(r'"([A-Z][A-Z0-9_]*_)"', code))
    # A name is in the code when it is a whole word there (as \bNAME\b would find it).
    words = set(re.findall(r"\w+", code))

    def in_code(name: str) -> bool:
        if name in words:
            return True
        stem, _, suffix = name.rpartition("_")
        return f"{stem}_" in prefixes and suffix in ("USERNAME", "PASSWORD")

    return frozenset(name for name in readme_variables() if in_code(name))


def not_ours(names: set[str]) -> set[str]:
    return names - our_settings()


def test_readme_table_lists_real_settings() -> None:
    documented = readme_variables()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "CASSANDRA_READER_PASSWORD", "FINNHUB_TOKEN"} <= documented
    # A name in the table that no code reads is a stale row.
    assert documented == our_settings()


def test_settings_check_catches_a_made_up_variable() -> None:
    assert not_ours({"KAFKA_BOOTSTRAP_SERVERS", "CASSANDRA_PASSWORD"}) == set()
    assert not_ours({"KAFKA_BOOTSTRAP_SERVER", "COLLECTOR_MADE_UP_S"}) == {
        "KAFKA_BOOTSTRAP_SERVER",
        "COLLECTOR_MADE_UP_S",
    }


# --- compose -----------------------------------------------------------------------------------


def compose_app_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from our Dockerfile's app target (ours; the rest are the engines')."""
    return {
        name: svc
        for name, svc in model["services"].items()
        if (svc.get("build") or {}).get("target") == "app"
    }


def compose_env_names(service: dict[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.split("=", 1)[0] for item in env}
    return set(env)


@needs_tools
def test_compose_file_validates(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    engines = {"kafka", "cassandra", "spark-master", "spark-worker", "trino", "superset"}
    ours = {"collector", "stream-processor", "forecaster", "api", "streamlit", "bootstrap"}
    assert engines | ours <= set(services)
    assert set(compose_app_services(compose_model)) == ours | {"spark-master", "spark-worker"}
    long_running = set(services) - {"bootstrap", "forecaster"}
    assert {n for n in long_running if "healthcheck" not in services[n]} == set()
    for name in ("kafka", "cassandra", "superset"):
        # docker-compose 1.x prints short syntax: "kafka-data:/var/lib/kafka/data:rw"
        sources = {str(v).split(":", 1)[0] for v in services[name]["volumes"]}
        assert sources & set(compose_model["volumes"]), name
    # The secrets are the env file's values, nothing else.
    collector = services["collector"]["environment"]
    assert collector["FINNHUB_TOKEN"] == "change-me"


@needs_tools
def test_compose_env_of_our_services_is_ours(compose_model: dict[str, Any]) -> None:
    for name, service in compose_app_services(compose_model).items():
        assert not_ours(compose_env_names(service)) == set(), name


@needs_tools
def test_compose_refuses_to_run_without_a_secret(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    example = tools.COMPOSE_ENV_EXAMPLE.read_text(encoding="utf-8")
    env.write_text(re.sub(r"(?m)^FINNHUB_TOKEN=.*\n", "", example), encoding="utf-8")
    with pytest.raises(tools.ValidationFailed, match="set FINNHUB_TOKEN in .env"):
        tools.compose_config(env_file=env)


@needs_tools
@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        # a dependency on a service that does not exist
        (
            lambda m: m["services"]["collector"].update(
                depends_on={"kafak": {"condition": "service_started"}}
            ),
            "kafak",
        ),
        # a key the compose schema does not have
        (lambda m: m["services"]["api"].update(helthcheck={"test": ["CMD", "true"]}), "helthcheck"),
        # a named volume that is not declared
        (lambda m: m["volumes"].pop("kafka-data"), "kafka-data"),
    ],
)
def test_compose_validation_fails_on_a_broken_file(
    tmp_path: Path, breakage: Any, message: str
) -> None:
    original = yaml.safe_load(tools.COMPOSE_FILE.read_text(encoding="utf-8"))
    broken = copy.deepcopy(original)
    breakage(broken)
    (tmp_path / "trino").mkdir()
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    with pytest.raises(tools.ValidationFailed, match=message):
        tools.compose_config(path, tools.COMPOSE_ENV_EXAMPLE)


# --- the Helm chart ----------------------------------------------------------------------------


@needs_tools
def test_helm_lint_passes(helm: Path) -> None:
    assert "0 chart(s) failed" in tools.helm_lint()


@needs_tools
def test_rendered_chart_is_valid_kubernetes(rendered: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(rendered)
    assert tools.validate_kubernetes(text) == []
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert {
        ("StatefulSet", "tdp-kafka"),
        ("StatefulSet", "tdp-cassandra"),
        ("Deployment", "tdp-collector"),
        ("Deployment", "tdp-stream-processor"),
        ("Deployment", "tdp-spark-master"),
        ("Deployment", "tdp-spark-worker"),
        ("CronJob", "tdp-forecast"),
        ("Deployment", "tdp-trino"),
        ("Deployment", "tdp-superset"),
        ("Secret", "trading-data-platform"),
        ("Job", "tdp-bootstrap"),
    } <= kinds
    collector = next(d for d in rendered if d["metadata"]["name"] == "tdp-collector")
    container = collector["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def broken_variants(resource: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The resource with one mistake each: a misspelt field, a wrong type, a missing field."""
    misspelt = copy.deepcopy(resource)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    yield "readinesProbe", misspelt
    wrong_type = copy.deepcopy(resource)
    wrong_type["spec"]["replicas"] = "one"
    yield "replicas", wrong_type
    no_image_name = copy.deepcopy(resource)
    del no_image_name["spec"]["template"]["spec"]["containers"][0]["name"]
    yield "name", no_image_name


@needs_tools
def test_kubernetes_validation_fails_on_a_broken_manifest(
    rendered: list[dict[str, Any]],
) -> None:
    collector = next(d for d in rendered if d["metadata"]["name"] == "tdp-collector")
    for field, broken in broken_variants(collector):
        errors = tools.validate_kubernetes(yaml.safe_dump(broken))
        assert len(errors) == 1 and field in errors[0], (field, errors)


@needs_tools
def test_helm_fails_on_a_broken_chart(helm: Path, tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(tools.CHART_DIR, chart)
    # Without the required values (no image, no Secret values) the chart refuses to render.
    # (whichever image the chart checks first: ours or Superset's)
    with pytest.raises(tools.ValidationFailed, match=r"[iI]mage\.repository is required"):
        tools.helm_template(chart, chart / "values.yaml")
    template = chart / "templates" / "collector.yaml"
    template.write_text(template.read_text().replace("{{- end }}\n", "", 1))
    with pytest.raises(tools.ValidationFailed, match="helm lint failed"):
        tools.helm_lint(chart, chart / "ci-values.yaml")


def pod_specs(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = resource.get("spec") or {}
    if resource["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif "template" in spec:
        yield spec["template"]["spec"]


def helm_env_names(rendered: list[dict[str, Any]], image_repository: str) -> dict[str, set[str]]:
    """Per container of our image: the variables set by ``env`` and by ``envFrom`` (the keys
    of the ConfigMaps and Secrets it names, as rendered)."""
    sources = {
        (d["kind"], d["metadata"]["name"]): set((d.get("data") or {}) | (d.get("stringData") or {}))
        for d in rendered
        if d["kind"] in ("ConfigMap", "Secret")
    }
    found: dict[str, set[str]] = {}
    for resource in rendered:
        for pod in pod_specs(resource):
            for c in pod["containers"] + pod.get("initContainers", []):
                if not c["image"].startswith(image_repository + ":"):
                    continue
                names = {e["name"] for e in c.get("env", [])}
                for ref in c.get("envFrom", []):
                    kind = "ConfigMap" if "configMapRef" in ref else "Secret"
                    key = ref.get("configMapRef") or ref["secretRef"]
                    names |= sources[(kind, key["name"])]
                found[f"{resource['metadata']['name']}/{c['name']}"] = names
    return found


@needs_tools
def test_chart_env_of_our_containers_is_ours(rendered: list[dict[str, Any]]) -> None:
    repository = yaml.safe_load(tools.CHART_TEST_VALUES.read_text())["image"]["repository"]
    env = helm_env_names(rendered, repository)
    assert {"tdp-collector/collector", "tdp-forecast/forecast", "tdp-api/api"} <= set(env)
    assert "FINNHUB_TOKEN" in env["tdp-collector/collector"]
    for container, names in env.items():
        assert not_ours(names) == set(), container
    # The check sees a made-up variable in a rendered container.
    tampered = copy.deepcopy(rendered)
    api = next(
        d for d in tampered if d["kind"] == "Deployment" and d["metadata"]["name"] == "tdp-api"
    )
    api["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "GBM_API_TIMEOUT", "value": "5"}
    )
    assert not_ours(helm_env_names(tampered, repository)["tdp-api/api"]) == {"GBM_API_TIMEOUT"}
