"""Monitoring an operator can follow: the shipped Grafana dashboard is valid, and every metric it
queries is on the metrics port `mlaas up` fixed, once the platform has done some work."""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlaas import platform as mlaas_platform
from mlaas.settings import Settings
from mlaas.tiers import QUOTA_CATEGORIES
from tests.conftest import TEST_METRICS_PORT, Platform, _free_port_block
from tests.serve_apps.test_train_api import tiny_spec

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "configs" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
EXPORT_DEADLINE_S = 90  # Ray's workers push to the node's agent every few seconds

# PromQL words that are not metric names: functions are told apart by their "(", these not.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                 "and", "or", "unless", "offset", "inf", "nan"}  # fmt: skip

# The parts of Grafana's dashboard model that Grafana needs to import and draw the file.
_TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {"refId": {"type": "string", "minLength": 1},
                   "expr": {"type": "string", "minLength": 1}},
}  # fmt: skip
_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {"h": {"type": "integer", "minimum": 1},
                   "w": {"type": "integer", "minimum": 1, "maximum": 24},
                   "x": {"type": "integer", "minimum": 0, "maximum": 23},
                   "y": {"type": "integer", "minimum": 0}},
}  # fmt: skip
_PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos"],
    "properties": {"id": {"type": "integer"}, "title": {"type": "string", "minLength": 1},
                   "gridPos": _GRID},
    "if": {"properties": {"type": {"const": "row"}}},
    "else": {
        "required": ["datasource", "targets", "fieldConfig"],
        "properties": {
            "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "table"]},
            "datasource": {"type": "object", "required": ["type", "uid"],
                           "properties": {"type": {"const": "prometheus"}}},
            "targets": {"type": "array", "minItems": 1, "items": _TARGET},
        },
    },
}  # fmt: skip
GRAFANA_DASHBOARD = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 27},
        "panels": {"type": "array", "minItems": 1, "items": _PANEL},
        "templating": {"type": "object", "required": ["list"]},
        "time": {"type": "object", "required": ["from", "to"]},
    },
}  # fmt: skip


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_targets() -> list[dict[str, Any]]:
    return [target for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a histogram's ``_bucket`` included)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)  # label matchers, ranges
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    words = re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", bare)
    return {w for w in words if w.lower() not in _PROMQL_WORDS and not re.fullmatch(r"\d.*", w)}


def queried_metrics() -> set[str]:
    return set().union(*(metric_names(t["expr"]) for t in dashboard_targets()))


def scraped_samples(port: int) -> dict[str, list[dict[str, str]]]:
    """Name -> labels of each sample the metrics agent on ``port`` serves now."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


# ---------------------------------------------------------------------------------------
def test_dashboard_is_a_grafana_dashboard_of_prometheus_panels() -> None:
    board = dashboard()

    jsonschema.validate(board, GRAFANA_DASHBOARD)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    used = {json.dumps(p["datasource"]) for p in board["panels"] if p["type"] != "row"}
    assert used == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}


def test_dashboard_shows_what_the_issue_asks_for_in_scraped_names() -> None:
    queried = queried_metrics()

    assert {
        "ray_mlaas_http_requests_total",  # request rate, errors by code
        "ray_mlaas_http_request_latency_ms_bucket",  # latency percentiles
        "ray_mlaas_quota_units_total",
        "ray_mlaas_admission_refusals_total",
        "ray_mlaas_training_jobs_submitted_total",
        "ray_mlaas_training_jobs_finished_total",
        "ray_mlaas_provider_cost_usd_total",
    } <= queried
    assert all(name.startswith("ray_mlaas_") for name in queried), queried
    for target in dashboard_targets():
        assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_promql_metric_names_are_found_in_an_expression() -> None:
    expr = ('sum by (le) (rate(ray_a_bucket{code=~"5..", x="rate(no)"}[$__rate_interval])) '
            '/ on (job) ignoring (x) sum(ray_b_total offset 5m) * 60')  # fmt: skip

    assert metric_names(expr) == {"ray_a_bucket", "ray_b_total"}


def test_the_head_mlaas_up_starts_exports_metrics_on_the_configured_port(tmp_path: Path) -> None:
    default = mlaas_platform.head_command(Settings(home=tmp_path))
    configured = mlaas_platform.head_command(Settings(home=tmp_path, metrics_export_port=9464))

    assert "--metrics-export-port=8080" in default
    assert "--metrics-export-port=9464" in configured


def test_a_taken_metrics_port_is_refused_before_ray_starts_naming_the_setting(
    tmp_path: Path,
) -> None:
    free = _free_port_block(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(home=tmp_path, ray_port=free, dashboard_port=free + 3,
                            metrics_export_port=port)  # fmt: skip

        with pytest.raises(mlaas_platform.PlatformError) as refused:
            mlaas_platform._check_head_ports(settings)

    assert f"Port {port} on 127.0.0.1 for the Ray metrics agent" in refused.value.message
    assert "MLAAS_METRICS_EXPORT_PORT" in refused.value.message


def test_scrape_configs_point_at_the_fixed_metrics_port() -> None:
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    rayservice = next(d for d in yaml.safe_load_all((REPO / "configs/cluster/rayservice.yaml")
                      .read_text()) if d and d["kind"] == "RayService")  # fmt: skip
    cluster = rayservice["spec"]["rayClusterConfig"]
    default_port = Settings.model_fields["metrics_export_port"].default

    targets = [t for job in prometheus["scrape_configs"]
               for c in job.get("static_configs", []) for t in c["targets"]]  # fmt: skip
    assert targets == [f"127.0.0.1:{default_port}"]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        ports = {p["name"]: p["containerPort"]
                 for p in group["template"]["spec"]["containers"][0]["ports"]}  # fmt: skip
        assert ports["metrics"] == int(group["rayStartParams"]["metrics-export-port"])


# ---------------------------------------------------------------------------------------
def _do_some_work(platform: Platform, ray_driver: None) -> None:
    """Requests, a provider call, a training job submitted and cancelled, a quota refusal."""
    import ray

    from mlaas.admission import ACTOR_NAME, NAMESPACE

    _, pro_key = platform.new_tenant("pro")
    free_id, free_key = platform.new_tenant("free")
    with platform.client(free_key) as client:
        assert client.get("/v1/usage").status_code == 200
        assert client.get("/v1/train/job_doesnotexist/status").status_code == 404
        question = [{"role": "user", "content": f"hello {secrets.token_hex(4)}"}]  # no cache hit
        chat = client.post(
            "/v1/chat/completions", json={"model": "fake-openai/gpt-fake", "messages": question}
        )
        assert chat.status_code == 200, chat.text
    with platform.client(pro_key) as client:
        job = client.post("/v1/train", json=tiny_spec("monitoring", epochs=500))
        assert job.status_code == 202, job.text
        cancelled = client.post(f"/v1/train/{job.json()['training_job_id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    # The free tier's 100 training jobs used up: the next one is refused by the quota.
    admission = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    ray.get(admission.consume.remote(free_id, "free", "training_jobs", 100, "/v1/train"))
    with platform.client(free_key) as client:
        refused = client.post("/v1/train", json=tiny_spec("monitoring-over-quota"))
        assert refused.status_code == 429, refused.text


def test_every_metric_the_dashboard_queries_is_on_the_fixed_metrics_port(
    platform: Platform, ray_driver: None
) -> None:
    import ray

    wanted = queried_metrics()
    _do_some_work(platform, ray_driver)

    deadline = time.monotonic() + EXPORT_DEADLINE_S
    found = scraped_samples(TEST_METRICS_PORT)
    while time.monotonic() < deadline and not wanted <= set(found):
        time.sleep(1)  # between scrapes; the deadline bounds the wait
        found = scraped_samples(TEST_METRICS_PORT)

    assert ray.nodes()[0]["MetricsExportPort"] == TEST_METRICS_PORT
    assert not wanted - set(found), f"not exported in {EXPORT_DEADLINE_S} s: {wanted - set(found)}"
    ours = {name: series for name, series in found.items() if name.startswith("ray_mlaas_")}
    assert not {(n, label) for n, series in ours.items() for labels in series for label in labels
                if "tenant" in label.lower()}, "no series per tenant"  # fmt: skip
    categories = {labels["category"] for labels in found["ray_mlaas_quota_units_total"]}
    assert "training_jobs" in categories and categories <= set(QUOTA_CATEGORIES)
