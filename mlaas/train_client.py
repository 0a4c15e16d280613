"""``mlaas train <config>``: submit a job spec to the platform's API and follow it live.

The spec goes to ``POST /v1/train`` as JSON (so the gateway validates it, charges the quota
and submits it to Ray); then ``GET /v1/train/{id}/status`` is polled into a progress bar.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from mlaas.errors import MlaasError, ValidationError

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
SHOWN_METRICS = ("loss", "val_loss", "val_accuracy")


class TrainRequestError(MlaasError):
    """The platform refused the job or could not be asked; carries its error code."""


def read_spec(path: Path, overrides: list[str]) -> dict[str, Any]:
    """The spec file as a mapping, with ``key.path=value`` overrides (values read as YAML)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError(f"{path}: cannot read the spec: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValidationError(f"{path}: a job spec is a mapping of fields")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValidationError(f"--set needs key=value (got {item!r})")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    return raw


def submit(
    client: httpx.Client, spec: dict[str, Any], idempotency_key: str | None
) -> dict[str, Any]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    response = client.post("/v1/train", json=spec, headers=headers)
    if response.status_code != 202:
        raise _refusal(response)
    return response.json()  # type: ignore[no-any-return]


def _refusal(response: httpx.Response) -> TrainRequestError:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return TrainRequestError(f"HTTP {response.status_code}: {response.text[:300]}")
    field = (error.get("details") or {}).get("field")
    message = error.get("message", "")
    refusal = TrainRequestError(
        f"{error.get('code')}: {message}" + (f" (field {field})" if field else "")
    )
    refusal.code = str(error.get("code"))
    return refusal


def _describe(status: dict[str, Any]) -> str:
    progress, metrics = status["progress"], status.get("metrics") or {}
    shown = " ".join(
        f"{k}={metrics[k]:.4g}" for k in SHOWN_METRICS if isinstance(metrics.get(k), int | float)
    )
    return f"{status['status']:<9} epoch {progress['epoch']}/{progress['total_epochs']} {shown}"


def follow(
    client: httpx.Client, job_id: str, console: Console, poll_s: float = 1.0
) -> dict[str, Any]:
    """Poll the job's status into a live progress bar until it ends; returns the last status."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(job_id, total=100)
        while True:
            response = client.get(f"/v1/train/{job_id}/status")
            if response.status_code != 200:
                raise _refusal(response)
            status = response.json()
            bar.update(task, completed=status["progress"]["percent"], description=_describe(status))
            if status["status"] in TERMINAL:
                return status  # type: ignore[no-any-return]
            time.sleep(poll_s)
