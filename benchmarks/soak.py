"""Memory under steady load: does any platform process keep growing?

Starts its own platform (as load.py does: `mlaas up` in a temporary home, benchmark tiers, the
demo model `digits-demo@production` answering), then puts a steady, moderate load on it: wrk
with ``--connections`` (16) connections POSTing one digits row to /v1/predict, and, with
``--embeddings-connections`` > 0, wrk on /v1/embeddings too (4 short sentences a request;
MiniLM loads on the first one). The load runs for ``--warmup`` seconds (60), then
``--minutes`` (10) more.

At the end of the warm-up and at the end of the soak (both under load) it records the resident
memory of every process of the platform: RSS and PSS (shared pages split between the processes
sharing them), both from ``/proc/<pid>/smaps_rollup``. A process belongs to the platform when
its command line names the platform's Ray session, its home folder or its GCS port (raylet,
GCS, dashboard, log monitor, ...), or it descends from such a process (Serve's controller,
proxy, replicas, Ray workers, HAProxy); this benchmark and its wrk processes are left out.
Reports per process the growth in % over the soak and flags any growth of RSS or PSS above
``--threshold`` (10 %); a process that ended or started in between is listed as such. Also
checks the load invariant of load.py on the soak's answers. Prints one JSON object, then a
short table.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--warmup 60] [--connections 16]
                                        [--embeddings-connections 0]
                                        [--ingress python|haproxy]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import require_wrk  # noqa: E402
from idle import name_of, own_pids  # noqa: E402
from load import (  # noqa: E402
    ROW,
    figures_of,
    parse_status_output,
    running_platform,
    status_script,
    table,
    wrk_status_command,
)
from serving import MODEL, RAY_PORT, wait_until  # noqa: E402

MIB = 2**20
SENTENCES = [f"Sentence {i} of the soak, about serving models on a small cluster."
             for i in range(4)]


def platform_processes(session_name: str, home: Path, gcs_port: int) -> list[psutil.Process]:
    """The platform's processes: those whose command line names its Ray session, its home or
    its GCS port, and all their descendants (as `mlaas down` finds them to stop them)."""
    own_gcs = re.compile(rf"(address=[\w.\-]+:|gcs_server_port=){gcs_port}\b")
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if session_name in line or str(home) in line or own_gcs.search(line):
            roots.append(process)
    found = {p.pid: p for p in roots}
    for process in roots:
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in process.children(recursive=True)})
    for pid in own_pids():
        found.pop(pid, None)
    return sorted(found.values(), key=lambda p: p.pid)


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss and Pss of a process in bytes, from /proc/<pid>/smaps_rollup."""
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            figures[name.lower()] = int(rest.split()[0]) * 1024
    return figures


def memory_snapshot(processes: list[psutil.Process]) -> dict[int, dict[str, Any]]:
    snapshot = {}
    for process in processes:
        try:
            memory = smaps_rollup(process.pid)
            snapshot[process.pid] = {"name": name_of(process), **memory}
        except (OSError, psutil.Error, ValueError):
            continue  # ended meanwhile
    return snapshot


def growth(start: dict[int, dict[str, Any]], end: dict[int, dict[str, Any]],
           threshold_pct: float) -> list[dict[str, Any]]:
    rows = []
    for pid in sorted(set(start) | set(end)):
        before, after = start.get(pid), end.get(pid)
        name = (after or before or {}).get("name", "?")
        if before is None or after is None:
            rows.append({"pid": pid, "name": name,
                         "state": "started during the soak" if before is None
                         else "ended during the soak",
                         "rss_mib": round((after or before)["rss"] / MIB, 1),  # type: ignore[index]
                         "flagged": []})
            continue
        row: dict[str, Any] = {"pid": pid, "name": name, "state": "ran throughout"}
        flagged = []
        for key in ("rss", "pss"):
            row[f"{key}_mib_start"] = round(before[key] / MIB, 1)
            row[f"{key}_mib_end"] = round(after[key] / MIB, 1)
            pct = 100 * (after[key] - before[key]) / max(before[key], 1)
            row[f"{key}_growth_pct"] = round(pct, 1)
            if pct > threshold_pct:
                flagged.append(key)
        row["flagged"] = flagged
        rows.append(row)
    rows.sort(key=lambda r: -r.get("rss_mib_end", r.get("rss_mib", 0)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="minutes of soak")
    parser.add_argument("--warmup", type=float, default=60, help="seconds of the same load first")
    parser.add_argument("--connections", type=int, default=16, help="wrk on /v1/predict")
    parser.add_argument("--embeddings-connections", type=int, default=0,
                        help="wrk on /v1/embeddings as well (0: none)")
    parser.add_argument("--threshold", type=float, default=10,
                        help="growth in %% (RSS or PSS) that flags a process")
    parser.add_argument("--ingress", choices=["python", "haproxy"], default="haproxy",
                        help="the platform's HTTP front (MLAAS_INGRESS)")
    args = parser.parse_args()
    require_wrk()
    soak_s = args.minutes * 60
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with running_platform(args.ingress, "mlaas-bench-soak-") as platform:
        # wrk runs a little past the last sample, so that it is taken under load.
        duration = int(args.warmup + soak_s) + 5
        loads = {"predict": (platform.home / "predict_status.lua", args.connections,
                             "/v1/predict", {"model": MODEL, "inputs": ROW})}
        if args.embeddings_connections > 0:
            embed = {"model": "all-MiniLM-L6-v2", "input": SENTENCES}
            loads["embeddings"] = (platform.home / "embed_status.lua",
                                   args.embeddings_connections, "/v1/embeddings", embed)
            # MiniLM loads on the first request: before the load, not as its timeouts
            wait_until(lambda: httpx.post(f"{platform.base}/v1/embeddings", json=embed,
                                          headers=platform.headers, timeout=120
                                          ).status_code == 200, "the embeddings model", 300)
        runs: dict[str, subprocess.Popen[str]] = {}
        try:
            for name, (script, connections, path, body) in loads.items():
                status_script(script.parent, script.stem, body)
                runs[name] = subprocess.Popen(
                    wrk_status_command(f"{platform.base}{path}", connections=connections,
                                       duration_s=duration, headers=platform.headers,
                                       script=script),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            time.sleep(args.warmup)
            processes = platform_processes(platform.session_name, platform.home, RAY_PORT)
            at_warmup = memory_snapshot(processes)
            load_at_warmup = os.getloadavg()
            time.sleep(max(0.0, t0 + args.warmup + soak_s - time.monotonic()))
            processes = platform_processes(platform.session_name, platform.home, RAY_PORT)
            at_end = memory_snapshot(processes)
            answers = {}
            for name, run in runs.items():
                out, err = run.communicate(timeout=duration + 120)
                if run.returncode != 0:
                    raise RuntimeError(f"wrk on {name} failed ({run.returncode}):\n{out}\n{err}")
                answers[name] = figures_of(parse_status_output(out))
        finally:
            for run in runs.values():
                if run.poll() is None:
                    run.kill()
                    run.wait(timeout=30)
    rows = growth(at_warmup, at_end, args.threshold)
    flagged = [r for r in rows if r["flagged"]]
    total = {when: {k: round(sum(p[k] for p in snap.values()) / MIB, 1) for k in ("rss", "pss")}
             for when, snap in (("at_warmup_end", at_warmup), ("at_end", at_end))}
    print(json.dumps({
        "name": "soak",
        "config": {"minutes": args.minutes, "warmup_s": args.warmup,
                   "connections": args.connections,
                   "embeddings_connections": args.embeddings_connections,
                   "threshold_pct": args.threshold, "ingress": args.ingress, "model": MODEL,
                   "cpus": os.cpu_count(), "load_avg_before": load_before,
                   "load_avg_at_warmup_end": load_at_warmup, "load_avg_after": os.getloadavg(),
                   "started": started},
        "figures": {"processes": len(at_end), "total_mib": total, "per_process": rows,
                    "flagged": [f"{r['name']} (pid {r['pid']}): " + ", ".join(
                        f"{k} +{r[f'{k}_growth_pct']}%" for k in r["flagged"]) for r in flagged],
                    "load": answers},
        "targets": {"growth of every process over the soak": f"<= {args.threshold} %",
                    "load invariant": "holds"},
    }, indent=2))
    lines = [(f"{r['name'][:48]} ({r['pid']})",
              f"{r['state']}, RSS {r['rss_mib']} MiB" if "rss_mib" in r else
              f"RSS {r['rss_mib_start']} -> {r['rss_mib_end']} MiB ({r['rss_growth_pct']:+}%), "
              f"PSS {r['pss_mib_start']} -> {r['pss_mib_end']} MiB ({r['pss_growth_pct']:+}%)"
              + ("  FLAGGED" if r["flagged"] else "")) for r in rows]
    lines += [(f"load on {name}", f"{a['sent']} answers, {a['2xx_per_s']} 2xx/s, invariant "
               + ("holds" if a["invariant_holds"] else "BROKEN: " + "; ".join(a["violations"])))
              for name, a in answers.items()]
    lines.append((f"processes over {args.threshold}%", len(flagged)))
    print(table(lines))
    sys.exit(0 if not flagged and all(a["invariant_holds"] for a in answers.values()) else 1)


if __name__ == "__main__":
    main()
