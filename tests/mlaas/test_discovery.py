"""Client commands find the platform's URL: MLAAS_URL first, then what `mlaas up` of this
home saved, then what the cluster publishes, and only then the settings' own host and port.
`mlaas up` publishes the head's proxy as other machines reach it. No Ray here."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas.discovery import client_url, published_url
from mlaas.platform import PlatformState
from mlaas.settings import Settings


@pytest.fixture(autouse=True)
def _no_cluster_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLAAS_URL", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


def test_a_proxy_on_every_interface_is_published_at_the_head_node_address(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, host="0.0.0.0", port=8100)

    assert published_url(settings, "10.1.2.3") == "http://10.1.2.3:8100"
    assert published_url(Settings(home=tmp_path, host="10.9.9.9"), "10.1.2.3") == (
        "http://10.9.9.9:8000"
    )
    assert published_url(Settings(home=tmp_path), "127.0.0.1") == "http://127.0.0.1:8000"


def test_mlaas_url_is_published_as_given(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, host="0.0.0.0", public_url="https://api.example.com/")

    assert published_url(settings, "10.1.2.3") == "https://api.example.com"


def test_a_client_takes_mlaas_url_over_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    PlatformState("10.1.2.3:6379", True, "http://10.1.2.3:8000").save(Settings(home=tmp_path))
    monkeypatch.setenv("MLAAS_URL", "https://api.example.com")

    assert client_url(Settings(home=tmp_path)) == "https://api.example.com"


def test_a_client_on_the_head_takes_the_url_mlaas_up_saved(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, port=9000)
    PlatformState("10.1.2.3:6379", True, "http://10.1.2.3:8000").save(settings)

    assert client_url(settings) == "http://10.1.2.3:8000"


def test_without_a_platform_or_a_reachable_cluster_the_settings_decide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing answers there

    assert client_url(Settings(home=tmp_path, port=9000)) == "http://127.0.0.1:9000"
