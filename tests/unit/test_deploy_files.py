"""The deployment files (compose, Dockerfile, Prometheus, Grafana, k8s) agree with the settings object."""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.settings import ROOT, Settings, load_settings

PREFIX = "STREAMREC_"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA = ROOT / "deploy" / "grafana"
K8S = ROOT / "deploy" / "k8s"

# Env names the deploy files already use for settings fields that do not exist yet.
# PENDING: stream/settings.py has no `worker_instance_id` field (the Kafka static-membership id);
# until it does, the StatefulSet's STREAMREC_WORKER_INSTANCE_ID is the one name allowed without a field.
PENDING_FIELDS = {"worker_instance_id"} - set(Settings.model_fields)

# The metrics the worker exports (name -> label names) and Triton's; `up` comes from Prometheus.
WORKER_METRICS: dict[str, set[str]] = {
    "streamrec_events_total": {"type"},
    "streamrec_held_events_total": set(),
    "streamrec_item_activity_rows_total": {"stage"},
    "streamrec_item_stats_pending": set(),
    "streamrec_item_stats_writes_total": set(),
    "streamrec_invalid_events_total": {"topic"},
    "streamrec_dead_letters_total": {"topic", "reason"},
    "streamrec_queries_total": set(),
    "streamrec_repeated_queries_total": set(),
    "streamrec_recommendations_total": {"fallback"},
    "streamrec_fallbacks_total": {"cause"},
    "streamrec_e2e_latency_seconds": set(),
    "streamrec_ranker_latency_seconds": set(),
    "streamrec_ranker_batch_size": set(),
    "streamrec_ingest_batch_size": set(),
    "streamrec_event_loop_lag_seconds": set(),
    "streamrec_breaker_state": {"model"},
    "streamrec_table_size": {"table"},
    "streamrec_consumer_lag": {"topic", "partition"},
    "streamrec_erasures_total": set(),
    "streamrec_model_version": {"model"},
    "streamrec_impressions_total": {"variant"},
    "streamrec_explored_items_total": {"variant"},
    "streamrec_coverage_items": {"variant"},
    "streamrec_feedback_impressions_total": {"variant"},
    "streamrec_feedback_clicked_total": {"variant"},
    "streamrec_feedback_converted_total": {"variant"},
    "streamrec_feedback_reciprocal_rank_sum_total": {"variant"},
    "streamrec_feedback_outcomes_total": {"result"},
    "streamrec_training_examples_total": {"label"},
}
HISTOGRAMS = {
    "streamrec_e2e_latency_seconds",
    "streamrec_ranker_latency_seconds",
    "streamrec_ranker_batch_size",
    "streamrec_event_loop_lag_seconds",
    "streamrec_ingest_batch_size",
}
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_pending_request_count",
}
# Labels Prometheus attaches to every scraped series, plus Triton's own.
TARGET_LABELS = {"job", "instance"}
TRITON_LABELS = {"model", "version", "gpu_uuid", "reason"}


# --- helpers ---------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _env(env: dict[str, Any] | list[str] | None) -> dict[str, str]:
    """Compose `environment` as a dict, whether written as a mapping or as KEY=VALUE items."""
    if env is None:
        return {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _settings_from(env: dict[str, str]) -> Settings:
    """Validate STREAMREC_* values exactly as the worker would, ignoring this machine's env file."""
    overrides: dict[str, object] = {
        key.removeprefix(PREFIX).lower(): value
        for key, value in env.items()
        if key.startswith(PREFIX) and key.removeprefix(PREFIX).lower() not in PENDING_FIELDS
    }
    return load_settings(_env_file=None, **overrides)


def _unknown_fields(names: set[str]) -> set[str]:
    fields = set(Settings.model_fields) | PENDING_FIELDS
    return {
        name for name in names if not name.startswith(PREFIX) or name[len(PREFIX) :].lower() not in fields
    }


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


def _container_port(spec: str | int | dict[str, Any]) -> int:
    """The container side of a compose `ports` entry ("8000:8000", "6066", or the long form)."""
    if isinstance(spec, dict):
        return int(spec["target"])
    return int(str(spec).split(":")[-1].split("/")[0])


@pytest.fixture(autouse=True)
def _no_streamrec_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _load(COMPOSE)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svc: dict[str, Any] = compose["services"]
    return svc


@pytest.fixture(scope="module")
def worker_env(services: dict[str, Any]) -> dict[str, str]:
    return _env(services["worker"]["environment"])


def test_compose_has_the_services(services: dict[str, Any]) -> None:
    assert {"kafka", "triton", "worker", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["triton"]["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")


def test_compose_worker_env_names_are_settings_fields(worker_env: dict[str, str]) -> None:
    assert worker_env, "the worker has no environment"
    assert _unknown_fields(set(worker_env)) == set()


def test_compose_worker_env_values_validate(worker_env: dict[str, str]) -> None:
    settings = _settings_from(worker_env)
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.triton_grpc_url == "triton:8001"
    assert settings.web_host == "0.0.0.0"
    assert settings.web_port == 6066
    assert settings.run_dir == Path("/var/lib/streamrec")


def test_compose_kafka_listens_where_the_worker_connects(
    services: dict[str, Any], worker_env: dict[str, str]
) -> None:
    settings = _settings_from(worker_env)
    assert settings.kafka_host in services
    kafka = services[settings.kafka_host]
    env = _env(kafka["environment"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert f"PLAINTEXT://{settings.kafka_bootstrap}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"PLAINTEXT://:{settings.kafka_port}" in env["KAFKA_LISTENERS"].split(",")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(env["KAFKA_NUM_PARTITIONS"]) == settings.topic_partitions
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 1
    # The controller quorum names the node and a controller listener.
    node, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert node == str(env["KAFKA_NODE_ID"])
    assert f"CONTROLLER://:{voter.rsplit(':', 1)[1]}" in env["KAFKA_LISTENERS"].split(",")
    assert str(settings.kafka_port) in {str(p) for p in kafka.get("expose", [])}
    assert "healthcheck" in kafka
    data_dir = env["KAFKA_LOG_DIRS"]
    assert any(v.split(":")[1] == data_dir for v in kafka["volumes"])
    assert kafka["volumes"][0].split(":")[0] in _named_volumes()


def _named_volumes() -> set[str]:
    return set(_load(COMPOSE).get("volumes") or {})


def test_compose_triton_serves_the_ports_the_worker_uses(
    services: dict[str, Any], worker_env: dict[str, str]
) -> None:
    settings = _settings_from(worker_env)
    assert settings.triton_host in services
    triton = services[settings.triton_host]
    command = triton["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    flags = _flags(argv)
    assert argv[0] == "tritonserver"
    assert int(flags["http-port"]) == settings.triton_http_port
    assert int(flags["grpc-port"]) == settings.triton_grpc_port
    assert int(flags["metrics-port"]) == settings.triton_metrics_port
    assert flags["model-control-mode"] == "explicit"
    assert flags["strict-readiness"] == "true"
    exposed = {_container_port(p) for p in triton["ports"]}
    assert {settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port} <= exposed
    health = " ".join(triton["healthcheck"]["test"])
    assert f":{settings.triton_http_port}/v2/health/ready" in health


def test_compose_triton_mounts_the_gpu_repository_and_reserves_a_gpu(services: dict[str, Any]) -> None:
    triton = services["triton"]
    flags = _flags(list(triton["command"]))
    mounts = [str(v).split(":") for v in triton["volumes"]]
    # The GPU repository (TensorRT plan + python models; tests/unit/test_gpu_repository.py).
    assert ["./deploy/gpu/model_repo", flags["model-repository"], "ro"] in mounts
    assert (ROOT / "deploy" / "gpu" / "model_repo" / "ranker" / "config.pbtxt").is_file()
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and d["count"] == 1 and d["capabilities"] == ["gpu"] for d in devices
    ), devices


def test_compose_worker_wiring(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    settings = _settings_from(worker_env)
    worker = services["worker"]
    assert worker["build"]["context"] == "."
    assert (ROOT / worker["build"]["dockerfile"]) == DOCKERFILE
    command = worker["command"]
    assert (command.split() if isinstance(command, str) else command) == ["worker"]
    depends = worker["depends_on"]
    for name in ("kafka", "triton"):
        assert depends[name]["condition"] == "service_healthy"
    assert settings.web_port in {_container_port(p) for p in worker["ports"]}
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in worker["volumes"]}
    assert mounts.get(str(settings.run_dir)) in _named_volumes()
    assert f":{settings.web_port}/health" in " ".join(worker["healthcheck"]["test"])


def test_compose_mounted_files_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# --- deploy/Dockerfile -----------------------------------------------------------------------


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert all(line.startswith("FROM python:3.11-slim") for line in lines if line.startswith("FROM "))
    assert "pip install -r requirements/app.lock" in text
    assert re.search(r"pip install --no-deps \.", text)
    assert "torch" not in text.replace("No torch", "")
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert 'ENTRYPOINT ["streamrec"]' in lines
    assert 'CMD ["worker"]' in lines
    assert "EXPOSE 6066" in lines
    assert "streamrec" in _pyproject_scripts()
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                # A bracket pattern (README.m[d]) is the Dockerfile idiom for an optional file.
                if "[" not in source:
                    assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def _pyproject_scripts() -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts


# --- Prometheus and Grafana ------------------------------------------------------------------


def _scrape_targets(job: str) -> list[str]:
    config = _load(PROMETHEUS)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    return [t for sc in jobs[job]["static_configs"] for t in sc["targets"]]


def test_prometheus_scrapes_worker_and_triton(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    settings = _settings_from(worker_env)
    assert _scrape_targets("worker") == [f"worker:{settings.web_port}"]
    assert _scrape_targets("triton") == [f"{settings.triton_host}:{settings.triton_metrics_port}"]
    config = _load(PROMETHEUS)
    mounts = dict(str(v).split(":")[:2] for v in services["prometheus"]["volumes"])
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    for rule_file in config["rule_files"]:
        assert mounts["./deploy/prometheus/" + rule_file] == "/etc/prometheus/" + rule_file


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_PROMQL_KEYWORDS = _PROMQL_WORDS | {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(?:" + "|".join(sorted(_PROMQL_WORDS)) + r")\s*\([^)]*\)")


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every series selector in a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery brackets
    text = _GROUPING.sub(" ", text)
    found = []
    token = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?")
    for match in token.finditer(text):
        name, matchers, call = match.groups()
        if call and not matchers:
            continue  # a function or an aggregation
        if name.lower() in _PROMQL_KEYWORDS:
            continue
        labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


def _known_labels(name: str) -> set[str] | None:
    if name == "up":
        return TARGET_LABELS
    if name in TRITON_METRICS:
        return TARGET_LABELS | TRITON_LABELS
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name in WORKER_METRICS:
        return TARGET_LABELS | WORKER_METRICS[name]
    if base in HISTOGRAMS:
        return TARGET_LABELS | WORKER_METRICS[base] | ({"le"} if name.endswith("_bucket") else set())
    return None


def test_promql_selector_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x"}[5m]))) > 1e-3 '
        "and on() sum(rate(b_total[1m] offset 5m)) by (topic) / c"
    )
    assert promql_selectors(expr) == [("a_bucket", {"job"}), ("b_total", set()), ("c", set())]


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = _load(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alerts_parse_and_are_complete(alert_rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names))
    for rule in alert_rules:
        assert rule["expr"].strip()
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_alerts_use_only_exported_metrics(alert_rules: list[dict[str, Any]]) -> None:
    for rule in alert_rules:
        selectors = promql_selectors(rule["expr"])
        assert selectors, rule["alert"]
        for name, labels in selectors:
            known = _known_labels(name)
            assert known is not None, f"{rule['alert']}: unknown metric {name}"
            assert labels <= known, f"{rule['alert']}: {name} has no label {labels - known}"


def test_alerts_cover_the_failure_modes(alert_rules: list[dict[str, Any]]) -> None:
    used = {name for rule in alert_rules for name, _ in promql_selectors(rule["expr"])}
    jobs = {m.group(1) for rule in alert_rules for m in re.finditer(r'up\{job="([^"]+)"\}', rule["expr"])}
    assert {"worker", "triton"} <= jobs
    assert {
        "streamrec_breaker_state",
        "streamrec_recommendations_total",
        "streamrec_e2e_latency_seconds_bucket",
        "streamrec_consumer_lag",
        "streamrec_dead_letters_total",
    } <= used


def test_grafana_provisioning(services: dict[str, Any]) -> None:
    mounts = dict(str(v).split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = _load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [d["url"] for d in datasources if d["type"] == "prometheus"] == ["http://prometheus:9090"]
    providers = _load(GRAFANA / "provisioning" / "dashboards" / "streamrec.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./deploy/grafana/dashboards"]]
    assert (GRAFANA / "dashboards").is_dir()


# --- deploy/grafana/dashboards/ --------------------------------------------------------------

DASHBOARD = GRAFANA / "dashboards" / "streamrec.json"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel, rows' nested panels included."""
    out: list[tuple[str, dict[str, Any]]] = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            out.extend((inner["title"], target) for target in inner.get("targets", []))
    return out


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    datasources = _load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    uids = {d["uid"] for d in datasources if d["type"] == "prometheus"}
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"]["uid"] in uids
            assert target["expr"].strip()


_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def test_dashboard_uses_only_exported_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    for title, target in dashboard_targets(dashboard):
        expr = target["expr"]
        selectors = promql_selectors(expr)
        assert selectors, f"{title}: no metric in {expr}"
        known_labels: set[str] = set()
        for name, labels in selectors:
            known = _known_labels(name)
            assert known is not None, f"{title}: unknown metric {name}"
            assert labels <= known, f"{title}: {name} has no label {labels - known}"
            known_labels |= known
        grouped = {
            label.strip() for m in _BY.finditer(expr) for label in m.group(1).split(",") if label.strip()
        }
        assert grouped <= known_labels, f"{title}: grouping by unknown labels {grouped - known_labels}"
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend <= grouped, f"{title}: legend uses {legend - grouped}, not kept by the aggregation"


def test_dashboard_covers_the_ops_view(dashboard: dict[str, Any]) -> None:
    used = {
        name for _, target in dashboard_targets(dashboard) for name, _ in promql_selectors(target["expr"])
    }
    worker = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used if n.startswith("streamrec_")}
    assert worker == set(WORKER_METRICS), f"not on the dashboard: {set(WORKER_METRICS) - worker}"
    assert used >= TRITON_METRICS, f"not on the dashboard: {TRITON_METRICS - used}"
    exprs = " ".join(target["expr"] for _, target in dashboard_targets(dashboard))
    for phi in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({phi}, sum by (le) (rate(streamrec_e2e_latency_seconds_bucket" in exprs


# --- deploy/k8s/ -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.y*ml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def config_map(k8s: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = _one(k8s, "ConfigMap")["data"]
    return data


def _resolve_port(port: int | str, container: dict[str, Any]) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == port)


def test_k8s_kinds_and_namespace(k8s: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in k8s}
    assert {"Namespace", "ConfigMap", "StatefulSet", "Deployment", "Service"} <= kinds
    namespace = _one(k8s, "Namespace")["metadata"]["name"]
    for doc in k8s:
        assert doc.get("apiVersion"), doc["kind"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]


def test_k8s_configmap_keys_are_settings_fields_and_validate(config_map: dict[str, str]) -> None:
    assert _unknown_fields(set(config_map)) == set()
    assert all(isinstance(v, str) for v in config_map.values()), "ConfigMap values must be strings"
    settings = _settings_from(config_map)
    assert settings.web_host == "0.0.0.0"


def test_k8s_worker_statefulset(k8s: list[dict[str, Any]], config_map: dict[str, str]) -> None:
    settings = _settings_from(config_map)
    sts = _one(k8s, "StatefulSet")
    pod = sts["spec"]["template"]
    (container,) = pod["spec"]["containers"]

    # State: one claim per pod, mounted where the worker keeps its RocksDB tables.
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert claims
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(settings.run_dir)] in claims

    # Settings: the ConfigMap plus the pod's own name as its static-membership id.
    config_name = _one(k8s, "ConfigMap")["metadata"]["name"]
    assert {"configMapRef": {"name": config_name}} in container["envFrom"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAMREC_WORKER_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # STREAMREC_WORKER_INSTANCE_ID passes here only through PENDING_FIELDS while the field is missing.
    assert _unknown_fields(set(env)) == set()

    # Ports and probes agree with STREAMREC_WEB_PORT.
    assert settings.web_port in {int(p["containerPort"]) for p in container["ports"]}
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert _resolve_port(get["port"], container) == settings.web_port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.web_port

    # A headless Service governs the set and selects its pods.
    service = _one(k8s, "Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert sts["spec"]["replicas"] <= settings.topic_partitions
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_triton(k8s: list[dict[str, Any]], config_map: dict[str, str], services: dict[str, Any]) -> None:
    settings = _settings_from(config_map)
    deployment = _one(k8s, "Deployment", "triton")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert container["image"] == services["triton"]["image"]
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/v2/health/ready"
    assert _resolve_port(ready["port"], container) == settings.triton_http_port == 8000

    # Same server flags as compose, and the ports the ConfigMap tells the worker.
    flags = _flags(container["args"])
    assert flags == _flags(list(services["triton"]["command"]))
    assert int(flags["grpc-port"]) == settings.triton_grpc_port
    assert int(flags["metrics-port"]) == settings.triton_metrics_port
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == settings.triton_metrics_port

    service = _one(k8s, "Service", "triton")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ports = {
        int(p["port"]): _resolve_port(p.get("targetPort", p["port"]), container)
        for p in service["spec"]["ports"]
    }
    wanted = {settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port}
    assert {port: port for port in wanted} == ports
    namespace = deployment["metadata"]["namespace"]
    assert settings.triton_host.split(".")[:2] in (["triton"], ["triton", namespace])
