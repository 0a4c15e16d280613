"""No log line of the run carries a secret: after every other test, every log the session
platform produced (its Ray session: Serve, replicas, workers, job drivers; its home) is read
for every API key, JWT and provider key the run used, and for anything shaped like one."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import Platform
from tests.serve_apps.providers.catalogue import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY

pytestmark = pytest.mark.scans_logs

# A whole API key (the 12-character prefix alone is an id, fine to log) and a whole JWT
KEY_SHAPE = re.compile(r"mlk_[0-9a-f]{12}_[A-Za-z0-9_-]{32,}")
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
SECRET_VARIABLE = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN)$")


def _log_files(platform: Platform) -> list[Path]:
    folders = {platform.ray_logs, platform.first_ray_logs or platform.ray_logs}
    files = [p for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file()]
    files += [p for p in platform.home.rglob("*.log") if p.is_file()]
    return files


def _secrets(platform: Platform) -> set[str]:
    from sqlalchemy.engine import make_url

    found = {s for s in platform.secrets_seen if len(s) >= 16}
    found |= {FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY}
    found |= {value for name, value in platform.env.items()
              if SECRET_VARIABLE.search(name) and len(value) >= 12}  # fmt: skip
    if url := platform.env.get("MLAAS_DATABASE_URL"):
        password = make_url(url).password
        if password and len(password) >= 8:
            found.add(password)
    return found


def test_no_log_line_of_the_run_carries_a_key_a_token_or_a_provider_key(
    platform: Platform,
) -> None:
    # Prepare: this test's own key, JWT and failing provider call, so the scan has at least
    # one of each that the platform handled, whatever ran before it
    _, key = platform.new_tenant("free")
    with platform.client(key) as client:
        minted = client.post("/v1/auth/token")
        assert minted.status_code == 200, minted.text
        token = minted.json()["access_token"]
    with httpx.Client(base_url=platform.url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as by_token:  # fmt: skip
        assert by_token.get("/v1/keys").status_code == 200
        by_token.post("/v1/chat/completions", json={
            "model": "fake-openai/gpt-keyleak",
            "messages": [{"role": "user", "content": "hello"}]})  # fmt: skip
    platform.secrets_seen.add(token)
    secrets = _secrets(platform)
    files = _log_files(platform)

    # Execute
    leaks: list[str] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        where = path.name
        for secret in secrets:
            if secret in text:
                leaks.append(f"{where}: a secret of the run ({secret[:6]}…)")
        for shape in (KEY_SHAPE, JWT_SHAPE):
            leaks += [f"{where}: {match.group()[:10]}…" for match in shape.finditer(text)]

    # Assert
    assert len(files) > 10 and len(secrets) >= 5, (len(files), len(secrets))
    assert not leaks, "\n".join(sorted(set(leaks))[:40])
