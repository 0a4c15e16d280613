"""Where a `/v1/predict` spends its time: py-spy samples of the gateway replicas, the
`Inference` replica and the admission actor while wrk loads the gateway.

Starts its own platform (as serving.py: `mlaas up` in a temporary home, the demo model
`digits-demo@production`), loads `/v1/predict` with one digits row per request at
`--connections` for `--duration` seconds, and samples each process with `py-spy record`
(`--nonblocking`, Python frames, active samples only) for the middle of the load. Each sample
is put in one part of the path: the innermost frame of the platform's own code decides
(credentials, admission, version resolution, input checks, the call into the model replica,
the forward), otherwise the innermost library frame (FastAPI/pydantic, Starlette, the HTTP
server, Serve's replica machinery, the event loop). Prints one JSON object (share of each
process's busy samples per part, and the load average before and after).

    .venv/bin/python benchmarks/profile_predict.py [--duration 30] [--connections 32]
                                                   [--ingress python|haproxy]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import require_wrk, run_wrk  # noqa: E402
from serving import MLAAS, MODEL, PORT, lua_post, start_platform, wait_until  # noqa: E402

PY_SPY = str(Path(sys.executable).parent / "py-spy")
PROCESSES = {
    "gateway": "ray::ServeReplica:gateway:Gateway",
    "inference": "ray::ServeReplica:inference:Inference",
    "admission": "ray::Admission",
}
# The platform's own code: the innermost matching frame decides (first rule that matches).
OURS = [
    ("credentials (API key / JWT)", ("gateway/credentials.py", "mlaas/auth.py")),
    ("admission (rate limit, quota, metering)", ("admission_batch.py", "mlaas/admission.py",
                                                 "check_admission", "consume_quota")),
    ("version resolution", ("gateway/versions.py",)),
    ("input checks", ("inference/schema.py",)),
    ("forward (runner)", ("inference/runners", "torch/")),
    ("model replica code", ("serve_apps/inference/",)),
    ("gateway middleware", ("gateway/middleware.py",)),
    ("gateway route code", ("serve_apps/gateway/",)),
]
LIBRARIES = [
    ("call into another replica (Serve handle, router)", ("ray/serve/handle.py",
                                                         "ray/serve/_private/router",
                                                         "request_router")),
    ("Serve replica machinery", ("ray/serve/",)),
    ("Ray core (object transfer, actor calls)", ("ray/_private", "ray/_raylet", "ray/actor")),
    ("FastAPI / pydantic (routing, parsing, responses)", ("fastapi/", "pydantic")),
    ("Starlette", ("starlette/",)),
    ("HTTP server (uvicorn, h11, httptools)", ("uvicorn/", "h11/", "httptools")),
    ("JSON", ("json/", "orjson")),
    ("event loop", ("asyncio/", "uvloop")),
]


def pids_of(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if command.startswith(marker):
                found.append(int(entry.name))
    return sorted(found)


def part_of(frames: list[str]) -> str:
    """``frames`` from the outermost to the innermost."""
    library = None
    for frame in reversed(frames):
        for name, needles in OURS:
            if any(needle in frame for needle in needles):
                return name
        if library is None:
            library = next((name for name, needles in LIBRARIES
                            if any(needle in frame for needle in needles)), None)  # fmt: skip
    return library or "other"


def breakdown(raw: Path) -> dict[str, object]:
    parts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            parts[part_of(stack.split(";"))] += int(count)
    total = sum(parts.values())
    return {"busy_samples": total,
            "share": {name: round(n / total, 3) for name, n in parts.most_common()} if total
            else {}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=30, help="seconds of load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ingress", choices=["python", "haproxy"], default="haproxy")
    args = parser.parse_args()
    require_wrk()
    if not os.access(PY_SPY, os.X_OK):
        raise SystemExit("py-spy is needed: .venv/bin/pip install py-spy")
    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="mlaas-bench-profile-"))
    env = start_platform(home, args.ingress)
    base = f"http://127.0.0.1:{PORT}"
    try:
        key = (home / "admin_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": MODEL, "inputs": [[float(v % 16) for v in range(64)]]}
        wait_until(lambda: httpx.post(f"{base}/v1/predict", headers=headers, json=body,
                                      timeout=30).status_code == 200, "the demo model")
        script = lua_post(home, "predict", body)
        run_wrk(f"{base}/v1/predict", connections=args.connections, duration_s=5,
                headers=headers, script=script)  # warm-up
        samplers = []
        sample_s = max(5, args.duration - 10)
        out = home / "profiles"
        out.mkdir()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # wrk is a process of its own
            load = pool.submit(run_wrk, f"{base}/v1/predict", connections=args.connections,
                               duration_s=args.duration, headers=headers, script=script)
            time.sleep(5)
            for role, marker in PROCESSES.items():
                for index, pid in enumerate(pids_of(marker)):
                    raw = out / f"{role}-{index}.txt"
                    samplers.append((role, pid, raw, subprocess.Popen(
                        [PY_SPY, "record", "--pid", str(pid), "--duration", str(sample_s),
                         "--rate", "200", "--nonblocking", "--format", "raw",
                         "--output", str(raw)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
            for *_, sampler in samplers:
                sampler.wait(timeout=sample_s + 60)
            wrk = load.result(timeout=args.duration + 60)
        profiles = {f"{role} (pid {pid})": breakdown(raw) if raw.exists() else "no samples"
                    for role, pid, raw, _ in samplers}  # fmt: skip
    finally:
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, text=True)
    print(json.dumps({
        "name": "profile_predict",
        "config": {"duration_s": args.duration, "connections": args.connections,
                   "ingress": args.ingress, "cpus": os.cpu_count(),
                   "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "load": wrk,
        "profiles": profiles,
    }, indent=2))


if __name__ == "__main__":
    main()
