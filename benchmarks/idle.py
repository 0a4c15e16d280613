"""What the platform costs at rest: CPU busy and resident memory of an idle `mlaas up`, beside a
bare Ray head started with the same `ray start` flags (the floor the platform builds on).

For each side: start it in a temporary home on ports of its own, wait ``--settle`` seconds
after it is up (60 s), then sample ``--sample`` seconds (30 s):

- **machine CPU busy**: the share of all cores busy over the sample, from ``/proc/stat``
  (the machine must be quiet: nothing else running; the load average is recorded);
- **process CPU**: the CPU seconds every process the side started used over the sample,
  as a share of the machine;
- **resident memory**: the sum of RSS (pages shared between processes counted in each) and
  of PSS (shared pages split between their processes) over every process the side started.

A process belongs to a side when it was not running before the side started and is not this
benchmark. Prints one JSON object; ``--top`` processes by RSS are listed by name.

    .venv/bin/python benchmarks/idle.py [--settle 60] [--sample 30] [--top 25]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
MLAAS = str(Path(sys.executable).parent / "mlaas")
PORT, RAY_PORT, DASHBOARD_PORT = 39800, 37479, 39865
GIB = 1024**3


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def own_pids() -> set[int]:
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents()), *(p.pid for p in me.children(True))}


def started_since(before: set[int]) -> list[psutil.Process]:
    mine = own_pids()
    return [p for p in psutil.process_iter() if p.pid not in before and p.pid not in mine]


def name_of(process: psutil.Process) -> str:
    try:
        line = process.cmdline()
    except psutil.Error:
        return "?"
    if not line:
        return process.name()
    if line[0].startswith("ray::"):
        return line[0]
    words = [Path(line[0]).name] + [w for w in line[1:4] if not w.startswith("-")][:2]
    return " ".join(Path(w).name if "/" in w else w for w in words)[:80]


def sample(before: set[int], seconds: float, top: int) -> dict[str, Any]:
    processes = started_since(before)
    cpu0: dict[int, float] = {}
    for p in processes:
        try:
            times = p.cpu_times()
            cpu0[p.pid] = times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass
    busy0, total0 = machine_busy()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    busy1, total1 = machine_busy()
    cores = os.cpu_count() or 1
    used, rows = 0.0, []
    for p in started_since(before):
        try:
            times = p.cpu_times()
            now = times.user + times.system + times.children_user + times.children_system
            memory = p.memory_full_info()
        except psutil.Error:
            continue
        spent = now - cpu0.get(p.pid, now)  # a process born during the sample: not counted
        used += spent
        rows.append((memory.rss, memory.pss, round(100 * spent / elapsed, 2), name_of(p)))
    rows.sort(reverse=True)
    return {
        "processes": len(rows),
        "machine_cpu_busy_pct": round(100 * (busy1 - busy0) / max(total1 - total0, 1), 2),
        "process_cpu_pct_of_machine": round(100 * used / (elapsed * cores), 2),
        "rss_gib": round(sum(r[0] for r in rows) / GIB, 3),
        "pss_gib": round(sum(r[1] for r in rows) / GIB, 3),
        "top_by_rss": [{"name": name, "rss_mib": round(rss / 2**20),
                        "pss_mib": round(pss / 2**20), "cpu_pct_of_one_core": cpu}
                       for rss, pss, cpu, name in rows[:top]],
        "top_by_cpu": [{"name": name, "cpu_pct_of_one_core": cpu}
                       for _, _, cpu, name in sorted(rows, key=lambda r: -r[2]) if cpu > 0],
    }


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLAAS_", "RAY_"))}
    env.update(MLAAS_HOME=str(home), MLAAS_PORT=str(PORT), MLAAS_RAY_PORT=str(RAY_PORT),
               MLAAS_DASHBOARD_PORT=str(DASHBOARD_PORT), MLAAS_METRICS_EXPORT_PORT=str(PORT + 20),
               MLAAS_HAPROXY_METRICS_PORT=str(PORT + 11), MLAAS_HAPROXY_STATS_PORT=str(PORT + 12))
    return env


def bare_ray(env: dict[str, str], settle: float, sample_s: float, top: int) -> dict[str, Any]:
    """A bare head started as `mlaas up` starts its own (same flags, same environment)."""
    from mlaas.platform import start_ray_head, stop_ray_head
    from mlaas.settings import Settings

    os.environ.update(env)
    settings = Settings()
    before = {p.pid for p in psutil.process_iter()}
    start_ray_head(settings)
    try:
        time.sleep(settle)
        return sample(before, sample_s, top)
    finally:
        stop_ray_head("", settings.ray_port)


def platform(env: dict[str, str], settle: float, sample_s: float, top: int) -> dict[str, Any]:
    before = {p.pid for p in psutil.process_iter()}
    started = time.monotonic()
    subprocess.run([MLAAS, "up"], env=env, check=True, capture_output=True, text=True)
    up_s = time.monotonic() - started
    try:
        time.sleep(settle)
        return {"up_s": round(up_s, 1), **sample(before, sample_s, top)}
    finally:
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settle", type=float, default=60, help="seconds after start")
    parser.add_argument("--sample", type=float, default=30, help="seconds sampled")
    parser.add_argument("--top", type=int, default=25, help="processes listed by RSS")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for both sides (repeatable)")
    parser.add_argument("--skip-bare", action="store_true", help="the platform only")
    parser.add_argument("--ingress", choices=["python", "haproxy"], default=None,
                        help="the platform's HTTP front (MLAAS_INGRESS); unset: the default")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mlaas-bench-idle-") as folder:
        home = Path(folder)
        env = clean_env(home)
        if args.ingress:
            env["MLAAS_INGRESS"] = args.ingress
        env.update(item.split("=", 1) for item in args.env)
        bare = (bare_ray(env, args.settle, args.sample, args.top) if not args.skip_bare
                else {"rss_gib": float("nan"), "machine_cpu_busy_pct": float("nan")})
        full = platform(env, args.settle, args.sample, args.top)
    print(json.dumps({
        "name": "idle",
        "config": {"settle_s": args.settle, "sample_s": args.sample, "ingress": args.ingress,
                   "env": args.env,
                   "cpus": os.cpu_count(), "load_avg_before": load_before,
                   "load_avg_after": os.getloadavg(),
                   "date": time.strftime("%Y-%m-%d %H:%M")},
        "baseline": "bare `ray start --head` with the flags `mlaas up` uses",
        "figures": {"bare_ray": bare, "platform": full},
        "ratio": {"platform_vs_bare_rss": round(full["rss_gib"] / max(bare["rss_gib"], 1e-9), 2),
                  "platform_vs_bare_cpu": round(full["machine_cpu_busy_pct"]
                                                / max(bare["machine_cpu_busy_pct"], 1e-9), 2)},
        "targets": {"platform machine_cpu_busy_pct": "<= 5", "platform rss_gib": "<= 3"},
    }, indent=2))


if __name__ == "__main__":
    main()
