"""What the platform keeps for itself: the rate-limit table stays bounded, secrets are written
where they are meant to go and nowhere else, and the home folder is private on every start."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from mlaas import admission
from mlaas.admission import AdmissionLedger
from mlaas.settings import Settings, write_private_file
from tests.conftest import MLAAS, platform_env

TIERS = {
    "tiers": {"free": {"quotas": {}}},
    "rate_limits": {"window_s": 60, "default_per_window": 5, "endpoints": {"/health": 2}},
    "metered": {},
}


def _ledger_with_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                       ) -> tuple[AdmissionLedger, list[float]]:  # fmt: skip
    """A ledger whose clock is ``now[0]`` (the test moves it), with a cap of 500 windows."""
    now = [1000.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(admission, "MAX_RATE_WINDOWS", 500, raising=False)
    return AdmissionLedger(f"sqlite:///{tmp_path / 'unused.db'}", TIERS), now


def test_one_client_address_per_health_call_does_not_grow_the_rate_limit_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a clock the test moves, and a small cap
    ledger, now = _ledger_with_clock(tmp_path, monkeypatch)

    # Execute: 2,000 addresses inside one window, then 10 more after it has passed
    admitted = [ledger.admit(f"ip:10.0.{i // 250}.{i % 250}", "/health") for i in range(2000)]
    size_in_window = len(ledger._windows)
    now[0] += 61
    for i in range(10):
        ledger.admit(f"ip:10.9.0.{i}", "/health")

    # Assert
    assert admitted == [None] * 2000
    assert size_in_window <= 500, size_in_window
    assert len(ledger._windows) == 10, "windows idle past the window are forgotten"


def test_the_limit_still_holds_for_a_client_that_keeps_calling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    ledger, now = _ledger_with_clock(tmp_path, monkeypatch)

    # Execute: one client at its limit while 400 others come and go
    mine = [ledger.admit("ip:10.1.1.1", "/health") for _ in range(2)]
    for i in range(400):
        now[0] += 0.01
        ledger.admit(f"ip:10.2.{i // 250}.{i % 250}", "/health")
    refused = ledger.admit("ip:10.1.1.1", "/health")

    # Assert
    assert mine == [None, None]
    assert refused is not None and refused[0] == "RATE_LIMIT_EXCEEDED"


def test_a_link_planted_at_a_temporary_name_never_receives_a_secret(tmp_path: Path) -> None:
    # Prepare: links at the names a writer could be predicted to use for jwt_secret
    target = tmp_path / "elsewhere"
    target.write_text("")
    home = tmp_path / "home"
    home.mkdir()
    for name in ("jwt_secret.tmp", ".jwt_secret.tmp", "jwt_secret~"):
        (home / name).symlink_to(target)

    # Execute
    write_private_file(home / "jwt_secret", "s3cr3t-value")

    # Assert
    assert target.read_text() == "", "the secret went through a planted link"
    written = home / "jwt_secret"
    assert not written.is_symlink() and written.read_text() == "s3cr3t-value\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    leftovers = sorted(p.name for p in home.iterdir() if not p.is_symlink())
    assert leftovers == ["jwt_secret"], leftovers


def test_a_home_opened_up_is_private_again_on_the_next_start(tmp_path: Path) -> None:
    # Prepare: a home made by hand, readable by everyone
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    env = {**platform_env(home), "MLAAS_HOME": str(home)}

    # Execute: any command of the CLI starts by opening the home
    result = subprocess.run([MLAAS, "migrate"], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip

    # Assert
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert Settings(home=home).ensure_home() == home
