"""Rate limits, quotas and metering through the real gateway, shared by its replicas."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import yaml

from tests.conftest import REPO, Platform


def _rate_limits() -> dict:
    return yaml.safe_load((REPO / "configs" / "tiers.yaml").read_text())["rate_limits"]


def _default_limit() -> int:
    return int(_rate_limits()["default_per_window"])


def _window_s() -> float:
    return float(_rate_limits()["window_s"])


def test_concurrent_burst_admits_exactly_the_limit_across_two_replicas(platform: Platform) -> None:
    _, key = platform.new_tenant()
    limit = _default_limit()
    window_s = _window_s()
    attempts = 2 * limit
    local = threading.local()
    clients: list[httpx.Client] = []

    def call(_: int) -> tuple[float, httpx.Response, float]:
        # One kept-alive connection per thread, so the burst is short compared with the window.
        if not hasattr(local, "client"):
            local.client = httpx.Client(
                base_url=platform.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            )
            clients.append(local.client)
        sent = time.monotonic()
        response = local.client.get("/v1/keys")
        return sent, response, time.monotonic()

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            calls = list(pool.map(call, range(attempts)))
    finally:
        for client in clients:
            client.close()
    responses = [r for _, r, _ in calls]
    first_sent = min(sent for sent, _, _ in calls)
    burst_s = max(done for _, _, done in calls) - first_sent

    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    # Every admission counted in the first window happened inside it: never more than the limit.
    window_end = first_sent + window_s
    admitted_early = sum(1 for _, r, done in calls if r.status_code == 200 and done < window_end)
    assert admitted_early <= limit
    if burst_s < window_s:
        assert statuses.count(200) == limit
    else:  # a very slow machine: the window slid during the burst and freed some places again
        assert limit <= statuses.count(200) < attempts, (burst_s, statuses.count(200))
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(refused.headers["retry-after"]) <= window_s
    replicas = {r.headers["x-mlaas-replica"] for r in responses}
    assert len(replicas) == 2, f"both gateway replicas served the burst, got {replicas}"


def test_health_is_limited_per_client_ip_to_its_documented_rate(platform: Platform) -> None:
    # From a client address of its own (127.0.0.2), so other tests' /health calls don't count.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with platform.client(transport=transport) as client:
        responses = [client.get("/health") for _ in range(110)]
    with platform.client() as other_client:
        from_elsewhere = other_client.get("/health")

    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 100 + [429] * 10
    assert responses[100].json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert from_elsewhere.status_code == 200, "the limit is per client address"


def test_the_platform_runs_behind_haproxy_by_default(platform: Platform) -> None:
    # HAProxy's own Prometheus frontend answers on the port the platform gave it
    port = platform.env["MLAAS_HAPROXY_METRICS_PORT"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)

    assert metrics.status_code == 200
    assert "haproxy_process_" in metrics.text


def test_a_client_cannot_escape_its_address_limit_with_a_forged_forwarded_for(
    platform: Platform,
) -> None:
    # Behind HAProxy (the default ingress) the replicas see HAProxy's address and read the
    # client's from X-Forwarded-For; a client's own header must not be what counts.
    transport = httpx.HTTPTransport(local_address="127.0.0.4")
    with platform.client(transport=transport) as client:
        responses = [client.get("/health", headers={"X-Forwarded-For": f"198.51.100.{i}"})
                     for i in range(105)]  # fmt: skip

    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 100 + [429] * 5


def test_usage_is_metered_per_endpoint(platform: Platform) -> None:
    tenant_id, key = platform.new_tenant()
    with platform.client(key) as client:
        for _ in range(3):
            assert client.get("/v1/keys").status_code == 200
        client.post("/v1/auth/token")
        usage = client.get("/v1/usage").json()

    per_endpoint = {e["endpoint"]: e["requests"] for e in usage["endpoints"]}
    assert usage["tenant_id"] == tenant_id
    assert per_endpoint["/v1/keys"] == 3
    assert per_endpoint["/v1/auth/token"] == 1
    assert per_endpoint["/v1/usage"] == 1
    assert usage["quotas"]["training_jobs"] == {"used": 0, "limit": 100, "remaining": 100}
    assert usage["quotas"]["inference_requests"]["limit"] == 10_000


def test_tenants_see_only_their_own_usage(platform: Platform) -> None:
    tenant_a, key_a = platform.new_tenant()
    _, key_b = platform.new_tenant()

    with platform.client(key_b) as client:
        response = client.get("/v1/usage", params={"tenant_id": tenant_a})
    with platform.client(platform.admin_key) as client:
        as_admin = client.get("/v1/usage", params={"tenant_id": tenant_a})

    assert response.status_code == 403
    assert as_admin.status_code == 200 and as_admin.json()["tenant_id"] == tenant_a


def test_quota_exhaustion_is_429_quota_exceeded(platform: Platform, ray_driver: None) -> None:
    import ray

    from mlaas.admission import ACTOR_NAME, NAMESPACE

    tenant_id, _ = platform.new_tenant("free")
    admission = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    assert (
        ray.get(
            admission.consume.remote(tenant_id, "free", "inference_requests", 10_000, "/v1/predict")
        )
        is None
    )

    refusal = ray.get(
        admission.consume.remote(tenant_id, "free", "inference_requests", 1, "/v1/predict")
    )

    assert refusal is not None and refusal[0] == "QUOTA_EXCEEDED" and refusal[2] == 10_000


def test_request_id_is_echoed_or_made(platform: Platform) -> None:
    with platform.client(platform.admin_key) as client:
        echoed = client.get("/v1/keys", headers={"X-Request-ID": "my-trace-123"})
        made = client.get("/v1/does-not-exist")

    assert echoed.headers["x-request-id"] == "my-trace-123"
    assert (
        made.headers["x-request-id"] and made.json()["request_id"] == made.headers["x-request-id"]
    )


def test_openapi_docs_are_served(platform: Platform) -> None:
    with platform.client() as client:
        docs = client.get("/docs")
        spec = client.get("/openapi.json").json()

    assert docs.status_code == 200
    assert {"/health", "/v1/auth/token", "/v1/keys", "/v1/tenants", "/v1/usage"} <= set(
        spec["paths"]
    )


def test_request_metrics_reach_prometheus(platform: Platform, ray_driver: None) -> None:
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    with platform.client(platform.admin_key) as client:
        client.get("/v1/keys")
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if re.search(r'mlaas_http_requests_total\{[^}]*endpoint="/v1/keys"', text):
            break
        time.sleep(1)
    assert re.search(
        r'mlaas_http_requests_total\{[^}]*endpoint="/v1/keys"[^}]*status_code="200"', text
    )
    assert "mlaas_http_request_latency_ms_bucket" in text


def test_no_key_reaches_the_logs(platform: Platform) -> None:
    _, key = platform.new_tenant()
    with platform.client(key) as client:
        client.get("/v1/usage")
        client.get("/v1/usage", headers={"Authorization": f"Bearer {key}x"})
    logs = platform.ray_logs
    assert logs.is_dir()

    leaked = [p for p in logs.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]

    assert leaked == []
