"""Heavy load on /v1/predict: does every request get an answer the API allows?

Starts its own platform (`mlaas up` in a temporary home, on the ports of serving.py, with its
generous benchmark tiers: 429 comes only from a real limit, never from the tier), waits for
the demo model (digits MLP, `digits-demo@production`), and runs wrk with ``--connections``
(1,000) connections for ``--duration`` (60 s), each request POSTing one digits row. A Lua
script (``_wrk_status.lua``) counts every response by status across wrk's threads, and the
503s that carry no ``Retry-After`` apart.

The invariant under load: no 5xx other than 503 with ``Retry-After``, no socket error (wrk's
connect/read/write/timeout; a read error is a connection reset), and every answered request is
a 2xx, a 429 or a 503 (sent == 2xx + 429 + 503). The platform is stopped at the end, also on
an error or a SIGTERM. The open-files limit is raised (for this process and what it starts)
so that the connections fit. Prints one JSON object, then a short table.

    .venv/bin/python benchmarks/load.py [--connections 1000] [--duration 60]
                                        [--ingress python|haproxy]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import require_wrk, wrk_command  # noqa: E402
from serving import MLAAS, MODEL, PORT, RAY_PORT, lua_post, start_platform, wait_until  # noqa: E402

STATUS_LUA = Path(__file__).resolve().parent / "_wrk_status.lua"
ROW = [[float(v % 16) for v in range(64)]]  # one digits row, as serving.py sends it
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


def raise_open_files(wanted: int) -> tuple[int, int]:
    """Raise this process's open-files limit (inherited by wrk and the platform it starts) to
    at least ``wanted``, as far as the hard limit allows (or beyond it, as root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft, 65_536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        raise SystemExit(f"the open-files limit is {soft}, fewer than the {wanted} needed")
    return soft, hard


def stop_on_sigterm() -> None:
    """A SIGTERM ends the benchmark as Ctrl-C does, so the platform is stopped on the way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@dataclass
class Running:
    """A platform this benchmark started."""

    home: Path
    env: dict[str, str]
    base: str
    headers: dict[str, str]

    @property
    def session_name(self) -> str:
        return json.loads((self.home / "state.json").read_text())["session_name"]


@contextlib.contextmanager
def running_platform(ingress: str, prefix: str, open_files: int = 4096) -> Iterator[Running]:
    """`mlaas up` in a temporary home with the demo model answering (both gateway replicas
    warm), `mlaas down` and the home removed at the end, whatever happens in between."""
    stop_on_sigterm()
    raise_open_files(open_files)
    home = Path(tempfile.mkdtemp(prefix=prefix))
    env: dict[str, str] | None = None
    try:
        try:
            env = start_platform(home, ingress)
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"mlaas up failed:\n{exc.stdout}\n{exc.stderr}") from exc
        base = f"http://127.0.0.1:{PORT}"
        key = (home / "admin_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": MODEL, "inputs": ROW}
        wait_until(lambda: httpx.post(f"{base}/v1/predict", headers=headers, json=body,
                                      timeout=30).status_code == 200, "the demo model")
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for _ in range(20):  # both gateway replicas and the inference replica warm
                client.post("/v1/predict", json=body)
        yield Running(home, env, base, headers)
    except BaseException:
        traceback.print_exc()  # before the cluster goes, which ends a connected driver
        raise
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if env is not None:
            subprocess.run([MLAAS, "down"], env=env, capture_output=True, text=True, timeout=300)
        from mlaas.platform import stop_ray_head

        stop_ray_head("", RAY_PORT)  # whatever `mlaas up` left if it failed half-way
        shutil.rmtree(home, ignore_errors=True)


def status_script(folder: Path, name: str, body: dict[str, Any]) -> Path:
    """A wrk script that POSTs ``body`` as JSON and counts the answers (_wrk_status.lua)."""
    script = lua_post(folder, name, body)
    script.write_text(script.read_text() + "\n" + STATUS_LUA.read_text())
    return script


def wrk_status_command(url: str, *, connections: int, duration_s: int, headers: dict[str, str],
                       script: Path) -> list[str]:
    threads = max(1, min(os.cpu_count() or 1, connections))
    return wrk_command(url, connections=connections, duration_s=duration_s, headers=headers,
                       script=script, threads=threads)


def parse_status_output(output: str) -> dict[str, Any]:
    """The counts _wrk_status.lua printed: statuses and per-second keys as ints."""
    line = next((x for x in output.splitlines() if x.startswith("WRK_STATUS_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no status counts:\n{output}")
    raw = json.loads(line.removeprefix("WRK_STATUS_JSON "))
    raw["statuses"] = {int(k): v for k, v in sorted(raw["statuses"].items())}
    per_second: dict[int, dict[int, int]] = {}
    for key, n in raw["per_second"].items():  # second * 1000 + status
        second, status = divmod(int(key), 1000)
        per_second.setdefault(second, {})[status] = n
    raw["per_second"] = dict(sorted(per_second.items()))
    # Lua escaped each byte past ASCII on its own: join them back into UTF-8
    raw["samples"] = {int(k): v.encode("latin-1", "replace").decode("utf-8", "replace")
                      for k, v in sorted(raw["samples"].items())}
    return raw


def run_status_wrk(url: str, *, connections: int, duration_s: int, headers: dict[str, str],
                   script: Path) -> dict[str, Any]:
    command = wrk_status_command(url, connections=connections, duration_s=duration_s,
                                 headers=headers, script=script)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 120)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse_status_output(done.stdout)


def figures_of(raw: dict[str, Any]) -> dict[str, Any]:
    """What a run of _wrk_status.lua says, and whether the load invariant held."""
    statuses: dict[int, int] = raw["statuses"]
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    limited, unavailable = statuses.get(429, 0), statuses.get(503, 0)
    other_5xx = {s: n for s, n in statuses.items() if 500 <= s < 600 and s != 503}
    socket = {k: raw["errors"][k] for k in SOCKET_ERRORS}
    sent = raw["requests"]
    duration_s = raw["duration_us"] / 1e6
    violations = []
    if other_5xx:
        violations.append(f"5xx other than 503: {other_5xx}")
    if raw["503_without_retry_after"]:
        violations.append(f"{raw['503_without_retry_after']} 503 without Retry-After")
    if any(socket.values()):
        violations.append(f"socket errors: {socket}")
    if sent != ok + limited + unavailable:
        violations.append(f"sent {sent} != 2xx {ok} + 429 {limited} + 503 {unavailable}")
    return {
        "sent": sent,
        "statuses": statuses,
        "2xx": ok,
        "429": limited,
        "503": unavailable,
        "503_without_retry_after": raw["503_without_retry_after"],
        "other_5xx": other_5xx,
        "socket_errors": socket,
        "p50_ms": round(raw["latency_us"]["p50"] / 1000, 2),
        "p99_ms": round(raw["latency_us"]["p99"] / 1000, 2),
        "max_ms": round(raw["latency_us"]["max"] / 1000, 2),
        "requests_per_s": round(sent / duration_s, 1) if duration_s else 0.0,
        "2xx_per_s": round(ok / duration_s, 1) if duration_s else 0.0,
        "invariant_holds": not violations,
        "violations": violations,
        "first_body_per_status": raw["samples"],
    }


def table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--ingress", choices=["python", "haproxy"], default="haproxy",
                        help="the platform's HTTP front (MLAAS_INGRESS)")
    args = parser.parse_args()
    require_wrk()
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with running_platform(args.ingress, "mlaas-bench-load-",
                          open_files=2 * args.connections + 1024) as platform:
        script = status_script(platform.home, "predict_status", {"model": MODEL, "inputs": ROW})
        raw = run_status_wrk(f"{platform.base}/v1/predict", connections=args.connections,
                             duration_s=args.duration, headers=platform.headers, script=script)
    figures = figures_of(raw)
    print(json.dumps({
        "name": "load",
        "config": {"connections": args.connections, "duration_s": args.duration,
                   "ingress": args.ingress, "model": MODEL, "cpus": os.cpu_count(),
                   "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                   "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                   "started": started},
        "figures": figures,
        "invariant": "no 5xx but 503 with Retry-After; no socket errors; "
                     "sent == 2xx + 429 + 503",
    }, indent=2))
    print(table([
        ("sent", figures["sent"]),
        ("per status", ", ".join(f"{s}: {n}" for s, n in figures["statuses"].items())),
        ("503 without Retry-After", figures["503_without_retry_after"]),
        ("socket errors", ", ".join(f"{k} {v}" for k, v in figures["socket_errors"].items())),
        ("p50 / p99 ms", f"{figures['p50_ms']} / {figures['p99_ms']}"),
        ("requests/s", figures["requests_per_s"]),
        ("invariant holds", "yes" if figures["invariant_holds"]
         else "NO: " + "; ".join(figures["violations"])),
    ]))
    sys.exit(0 if figures["invariant_holds"] else 1)


if __name__ == "__main__":
    main()
