"""``GET /health`` reports the schema revision and the storage beside the database: a replica
on an unmigrated database or an unreachable storage is 503, naming the part."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas.db import migrate
from mlaas.settings import Settings
from mlaas.storage import get_storage
from serve_apps.gateway.routes.health import schema_status, storage_ok
from tests.conftest import Platform


def test_the_schema_is_out_of_date_until_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlaas.db'}"

    before = schema_status(url)
    migrate(url)
    after = schema_status(url)

    assert before == "out_of_date" and after == "operational"


def test_the_storage_probe_writes_and_reads_back(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")

    assert storage_ok(settings)
    assert get_storage(settings).exists("_health/probe")


def test_a_storage_that_cannot_be_written_fails_the_probe(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage root should be")
    settings = Settings(home=tmp_path / "home", storage_uri=(blocker / "artifacts").as_uri())

    with pytest.raises(OSError):
        storage_ok(settings)


def test_health_reports_the_schema_and_the_storage(platform: Platform) -> None:
    with platform.client() as client:
        response = client.get("/health")

    assert response.status_code == 200, response.text
    services = response.json()["services"]
    assert services["database"] == services["schema"] == services["storage"] == "operational"
