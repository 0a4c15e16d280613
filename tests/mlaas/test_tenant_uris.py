"""Tenant URIs: a tenant reads only under its own storage prefix or an allow-listed bucket, and
a URI that could steer the reader elsewhere is refused before anything is fetched."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.fs as pa_fs
import pytest

from cluster.data import check_data, resolve_data_source
from cluster.errors import SpecError
from cluster.spec import JobSpec, validate_spec
from mlaas.errors import ForbiddenError, ValidationError
from mlaas.settings import Settings
from mlaas.storage import get_storage
from mlaas.tenant_uris import check_tenant_uri, filesystem_of
from tests.counting_server import CountingServer

TENANT = "ten_a"


@pytest.fixture(autouse=True)
def _platform_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials a forged request would carry away; no metadata-service lookups in tests.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "platform-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "platform-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def local(tmp_path: Path) -> Settings:
    """The embedded default: file:// storage under the home."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
def s3(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", storage_uri="s3://platform/prefix",
                    storage_endpoint="http://127.0.0.1:1", storage_allowed_buckets=["shared-data"])


@pytest.fixture
def server() -> Iterator[CountingServer]:
    with CountingServer() as running:
        yield running


def _spec(source: str) -> JobSpec:
    return validate_spec({"name": "x", "model": {"type": "mlp"},
                          "data": {"source": source, "target": "label"}})


def test_the_ssrf_uri_is_422_and_nothing_is_fetched(
    s3: Settings, server: CountingServer, tmp_path: Path
) -> None:
    # Each place a tenant's URI is checked or read: the checker, the reader, and the
    # training pre-flight (resolve, then check_data, which read the header before).
    paths: list[Callable[[str], object]] = [
        lambda uri: check_tenant_uri(uri, TENANT, s3),
        lambda uri: filesystem_of(uri, s3),
        lambda uri: resolve_data_source(_spec(uri), tmp_path, confine=True, source="<request>",
                                        tenant_id=TENANT, settings=s3),
        lambda uri: check_data(_spec(uri)),
    ]
    refusals = []
    for uri in server.ssrf_uris():
        for call in paths:
            with pytest.raises(ValidationError) as refused:
                call(uri)
            refusals.append(refused.value)

    assert server.requests == [], "the platform fetched from the forged endpoint"
    assert len(refusals) == 8
    assert all(r.status_code == 422 and r.code == "VALIDATION_ERROR" for r in refusals)
    assert all("internal_secret_header" not in r.message for r in refusals)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://platform/prefix/datasets/ten_a/x.csv?versionId=1",
        "s3://platform/prefix/datasets/ten_a/x.csv?",
        "x.csv?region=us-east-1",
    ],
)
def test_any_query_string_is_422(s3: Settings, uri: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_tenant_uri(uri, TENANT, s3)

    assert refused.value.status_code == 422
    assert refused.value.details["field"] == "input_uri" and "query" in refused.value.message


def test_a_fragment_is_422(s3: Settings) -> None:
    with pytest.raises(ValidationError) as refused:
        check_tenant_uri("s3://platform/prefix/datasets/ten_a/x.csv#part", TENANT, s3)

    assert refused.value.status_code == 422 and "fragment" in refused.value.message


def test_credentials_in_the_uri_are_422(s3: Settings) -> None:
    with pytest.raises(ValidationError) as refused:
        check_tenant_uri("s3://AKIA:secret@platform/prefix/datasets/ten_a/x.csv", TENANT, s3)

    assert refused.value.status_code == 422 and "credentials" in refused.value.message


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:8080/x.csv", "gs://bucket/x.csv", "hf://datasets/x/y.csv",
     "https://example.com/x.csv", "abfs://c/x.csv"],
)
def test_schemes_other_than_file_and_s3_are_422(s3: Settings, uri: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_tenant_uri(uri, TENANT, s3, field="data.source")

    assert refused.value.details["field"] == "data.source" and "scheme" in refused.value.message


@pytest.mark.parametrize("uri", ["s3://127.0.0.1:9000/x.csv", "file://evil.example/etc/x.csv",
                                 "datasets\\..\\x.csv", " x.csv", "x\n.csv"])
def test_hosts_ports_backslashes_and_control_characters_are_422(s3: Settings, uri: str) -> None:
    with pytest.raises(ValidationError):
        check_tenant_uri(uri, TENANT, s3)


def test_a_relative_name_is_a_file_under_the_tenants_prefix(
    local: Settings, s3: Settings
) -> None:
    on_disk = check_tenant_uri("sub/x.csv", TENANT, local)
    in_bucket = check_tenant_uri("./x.csv", TENANT, s3)

    assert on_disk == get_storage(local).uri_of("datasets/ten_a/sub/x.csv")
    assert on_disk.startswith("file://") and on_disk.endswith("/artifacts/datasets/ten_a/sub/x.csv")
    assert in_bucket == "s3://platform/prefix/datasets/ten_a/x.csv"


def test_the_tenants_own_uri_is_accepted_in_canonical_form(local: Settings, s3: Settings) -> None:
    own_file = get_storage(local).uri_of("datasets/ten_a/x.parquet")

    assert check_tenant_uri(own_file, TENANT, local) == own_file
    assert check_tenant_uri(own_file.removeprefix("file://"), TENANT, local) == own_file
    assert (check_tenant_uri("s3://platform/prefix//datasets/ten_a/x.csv", TENANT, s3)
            == "s3://platform/prefix/datasets/ten_a/x.csv")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://platform/prefix/datasets/ten_b/x.csv",  # another tenant
        "s3://platform/prefix/datasets/ten_ab/x.csv",  # a tenant whose id starts like ours
        "s3://platform/prefix/models/ten_a/m/v1/model.safetensors",  # the platform's own
        "s3://platform/prefix/datasets/ten_a/../ten_b/x.csv",  # out through ..
        "s3://platform/other/x.csv",  # the platform bucket outside its prefix
        "s3://someone-elses/x.csv",  # a bucket not on the allow-list
        "../ten_b/x.csv",
        "../../models/ten_a/m/v1/model.safetensors",
        "..",
    ],
)
def test_anything_outside_the_tenants_prefix_and_the_allow_list_is_403(
    s3: Settings, uri: str
) -> None:
    with pytest.raises(ForbiddenError) as refused:
        check_tenant_uri(uri, TENANT, s3)

    assert refused.value.status_code == 403 and refused.value.code == "FORBIDDEN"
    assert refused.value.details == {"field": "input_uri", "received": uri}


def test_local_paths_outside_the_tenants_folder_are_403(local: Settings) -> None:
    other = get_storage(local).uri_of("datasets/ten_b/x.csv")
    refused = []
    for uri in (other, other.removeprefix("file://"), "/etc/passwd", "file:///etc/passwd",
                str(local.home / "mlaas.db")):
        with pytest.raises(ForbiddenError) as raised:
            check_tenant_uri(uri, TENANT, local)
        refused.append(raised.value)

    assert len(refused) == 5
    assert all(str(local.home) not in r.message for r in refused), "no server path in the answer"


def test_an_allow_listed_bucket_is_readable(s3: Settings) -> None:
    accepted = check_tenant_uri("s3://shared-data/public/iris.csv", TENANT, s3)

    assert accepted == "s3://shared-data/public/iris.csv"
    with pytest.raises(ValidationError):
        check_tenant_uri("s3://shared-data/public/../../x.csv", TENANT, s3)


def test_the_reader_opens_a_checked_uri_with_the_platforms_filesystem(
    s3: Settings, local: Settings
) -> None:
    storage = get_storage(s3)

    fs, path = filesystem_of("s3://platform/prefix/datasets/ten_a/x.csv", s3)
    shared_fs, shared_path = filesystem_of("s3://shared-data/public/iris.csv", s3)
    local_fs, local_path = filesystem_of(
        get_storage(local).uri_of("datasets/ten_a/x.csv"), local
    )

    assert fs is storage.filesystem and path == "platform/prefix/datasets/ten_a/x.csv"
    assert shared_fs is storage.filesystem and shared_path == "shared-data/public/iris.csv"
    assert isinstance(fs, pa_fs.S3FileSystem) and fs.region == "us-east-1"
    assert isinstance(local_fs, pa_fs.LocalFileSystem)
    assert local_path == get_storage(local).path_of("datasets/ten_a/x.csv")


def test_training_data_uris_go_through_the_same_check(s3: Settings, tmp_path: Path) -> None:
    own = resolve_data_source(_spec("x.csv"), tmp_path, confine=True,
                              source="<request>", tenant_id=TENANT, settings=s3)
    with pytest.raises(ForbiddenError) as foreign:
        resolve_data_source(
            _spec("s3://platform/prefix/datasets/ten_b/x.csv"), tmp_path,
            confine=True, source="<request>", tenant_id=TENANT, settings=s3)
    with pytest.raises(SpecError) as forged:
        resolve_data_source(
            _spec("s3://platform/prefix/datasets/ten_a/x.csv?region=x.csv"),
            tmp_path, confine=True, source="<request>", tenant_id=TENANT, settings=s3)

    assert own.data.source == "s3://platform/prefix/datasets/ten_a/x.csv"
    assert foreign.value.details["field"] == "data.source"
    assert forged.value.field == "data.source" and "query" in forged.value.reason


def test_local_training_data_in_the_tenants_storage_folder_is_accepted(
    local: Settings, tmp_path: Path
) -> None:
    folder = get_storage(local).local_path("datasets/ten_a")
    assert folder is not None
    folder.mkdir(parents=True)
    (folder / "rows.csv").write_text("a,label\n1,x\n")
    other = get_storage(local).path_of("datasets/ten_b/rows.csv")

    by_name = resolve_data_source(_spec("rows.csv"), tmp_path / "data", confine=True,
                                  source="<request>", tenant_id=TENANT, settings=local)
    with pytest.raises(ForbiddenError):
        resolve_data_source(_spec(other), tmp_path / "data", confine=True,
                            source="<request>", tenant_id=TENANT, settings=local)

    assert by_name.data.source == str(folder / "rows.csv")
