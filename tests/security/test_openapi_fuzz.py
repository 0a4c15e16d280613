"""The live OpenAPI spec, fuzzed by schemathesis with a tenant's key: no route answers a server
error (5xx other than the documented 503 SERVICE_UNAVAILABLE) to anything generated from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Platform

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).parent / "st")
MIN_CASES = 1000


def _outcome(events: Path) -> tuple[int, list[str], list[str]]:
    """From schemathesis's NDJSON event stream: the cases sent, the failed checks (operation:
    message) and the errors that were not the API's answers (type: message)."""
    cases, failed, errors = 0, [], []
    for line in events.read_text().splitlines():
        event = json.loads(line)
        recorder = (event.get("ScenarioFinished") or {}).get("recorder") or {}
        cases += len(recorder.get("cases") or {})
        for checks in (recorder.get("checks") or {}).values():
            failed += [f"{c['failure_info']['failure'].get('operation')}: "
                       f"{c['failure_info']['failure'].get('message', '')[:300]}"
                       for c in checks if c.get("status") == "failure"]  # fmt: skip
        if error := (event.get("NonFatalError") or {}).get("value"):
            errors.append(f"{error.get('type')}: {error.get('message', '')[:300]}")
    return cases, failed, errors


# Hypothesis itself can fail while it builds a strategy's description (CPython 3.11's
# "AST constructor recursion depth mismatch" in ast.parse, deep in a recursive schema); it
# reports that as a flaky test, not as anything the API answered. The API's answers are all
# judged by the check, whose every failure is in the events.
TOOL_ERRORS = ("FlakyFailure",)


def _failures(output: str) -> str:
    """The failures section of schemathesis's output (its summary alone says only how many)."""
    start = output.find("FAILURES")
    return output[start:start + 12_000] if start >= 0 else output[-8000:]


def test_the_live_openapi_spec_fuzzed_gives_no_server_error(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a tenant of its own, on a tier whose rate limits let the cases reach the routes
    _, key = platform.new_tenant("pro")
    events = tmp_path / "events.ndjson"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.fuzz_hooks",
           "PYTHONPATH": str(REPO)}  # fmt: skip

    # Execute
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{platform.url}/openapi.json",
         "--header", f"Authorization: Bearer {key}",
         "--checks", "no_undocumented_server_error", "--max-examples", "10", "--seed", "14",
         "--workers", "2", "--max-time", "80", "--request-timeout", "60", "--no-shrink",
         "--report", "ndjson", "--report-ndjson-path", str(events), "--no-color"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    cases, failed, errors = _outcome(events) if events.exists() else (0, [], ["no events"])
    with capsys.disabled():  # shown in the run's output, not only on failure
        print(f"\nschemathesis sent {cases} generated cases to the live API", flush=True)

    # Assert
    assert not failed, "\n".join(failed[:20])
    api_errors = [e for e in errors if not e.startswith(TOOL_ERRORS)]
    assert not api_errors, "\n".join(api_errors) + _failures(result.stdout)
    assert result.returncode == 0 or errors, _failures(result.stdout) + result.stderr[-2000:]
    assert cases >= MIN_CASES, (cases, result.stdout[-3000:])
