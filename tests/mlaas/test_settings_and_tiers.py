import stat
from pathlib import Path

import pytest

from mlaas.errors import ConfigurationError
from mlaas.settings import Settings, secret_strength_problem
from mlaas.tiers import load_tiers

REPO = Path(__file__).resolve().parents[2]


def test_jwt_secret_is_generated_once_with_owner_only_mode(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")

    first = settings.jwt_signing_secret()
    second = Settings(home=tmp_path / "home").jwt_signing_secret()

    path = tmp_path / "home" / "jwt_secret"
    assert first == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_strength_problem(first) is None


@pytest.mark.parametrize("weak", ["short", "secret" * 2, "a" * 64, "changeme"])
def test_weak_jwt_secret_is_refused(tmp_path: Path, weak: str) -> None:
    settings = Settings(home=tmp_path, jwt_secret=weak)

    with pytest.raises(ConfigurationError, match="MLAAS_JWT_SECRET"):
        settings.jwt_signing_secret()


def test_settings_read_the_mlaas_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLAAS_HOME", str(tmp_path))
    monkeypatch.setenv("MLAAS_PORT", "18123")

    settings = Settings()

    assert settings.home == tmp_path.resolve()
    assert settings.url == "http://127.0.0.1:18123"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'mlaas.db'}"


def test_shipped_tiers_match_the_documented_limits() -> None:
    tiers = load_tiers(REPO / "configs" / "tiers.yaml")

    assert tiers.quota("free", "training_jobs") == 100
    assert tiers.quota("free", "inference_requests") == 10_000
    assert tiers.quota("pro", "training_jobs") == 1_000
    assert tiers.quota("pro", "inference_requests") == 1_000_000
    assert tiers.quota("enterprise", "inference_requests") is None
    limits = tiers.rate_limits
    assert {e: limits.limit_for(e) for e in limits.endpoints} == {
        "/health": 100,
        "/v1/ai/status": 60,
        "/v1/ai/synthetic-data": 10,
        "/v1/ai/analyze": 20,
        "/v1/ai/enhance": 5,
    }
    assert limits.limit_for("/v1/usage") == limits.default_per_window


def test_bad_tiers_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text("tiers:\n  free:\n    quotas: {training_jobs: lots}\n")

    with pytest.raises(ConfigurationError) as caught:
        load_tiers(path)

    assert str(path) in str(caught.value)
    assert "tiers.free.quotas.training_jobs" in str(caught.value)
