"""Run wrk against a URL and parse its latency percentiles and throughput."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is needed as the load generator: apt-get install wrk")
    return path


def wrk_command(
    url: str,
    *,
    connections: int,
    duration_s: int,
    headers: dict[str, str],
    script: Path | None = None,
    threads: int = 1,
) -> list[str]:
    """The wrk command line of one run (``threads`` wrk threads share the connections)."""
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    return [*command, url]


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: int,
    headers: dict[str, str],
    script: Path | None = None,
) -> dict:
    """One wrk run in its own process; returns p50/p99 in ms, requests/s and non-2xx count.
    ``script`` is a wrk Lua script (for example one that POSTs a JSON body)."""
    command = wrk_command(url, connections=connections, duration_s=duration_s, headers=headers,
                          script=script)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    if len(percentiles) < 2:
        raise RuntimeError(f"wrk measured no latencies against {url}:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "p50_ms": round(_ms(percentiles["50"]), 3),
        "p99_ms": round(_ms(percentiles["99"]), 3),
        "requests_per_s": round(rps, 1),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }
