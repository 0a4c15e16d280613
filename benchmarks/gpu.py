"""On a CUDA GPU: DDP (fp32 and bf16 autocast) vs DeepSpeed ZeRO-2 bf16 training throughput,
and the inference runner's latency in fp32 and bf16, against the same runner on the CPU.

One process, one GPU, one rank (a one-process NCCL group, as a Ray Train worker's), the
platform's own pieces: ``cluster.trainers.ddp.train_step`` (``hyperparameters.precision``),
``cluster.trainers.deepspeed.build_engine`` and ``train_step`` with
``configs/deepspeed/zero2-gpu-bf16.json`` (FusedAdam), a ``ClassificationTask`` on synthetic
rows, and ``serve_apps.inference.runners.TorchRunner`` on ``cuda``. No Ray cluster.

Without a CUDA device it prints ``{"name": "gpu", "skipped": "no CUDA device", ...}`` and exits
0. ``--device cpu`` runs every code path on the CPU instead (DeepSpeed's CPU accelerator,
``torch_adam`` for FusedAdam, a small model): a check that the script works, not a figure.

    .venv/bin/python benchmarks/gpu.py [--steps 50] [--batch 256] [--hidden 4096]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GPU_CONFIG = "configs/deepspeed/zero2-gpu-bf16.json"
FEATURES, CLASSES = 1024, 10
WARMUP_STEPS = 5
LATENCY_CALLS = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per run")
    parser.add_argument("--batch", type=int, default=256, help="rows per training batch")
    parser.add_argument("--hidden", type=int, default=4096, help="width of the 2 hidden layers")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        config = {"torch": torch.__version__, "cuda_build": torch.version.cuda}
        print(json.dumps({"name": "gpu", "skipped": "no CUDA device", "config": config}))
        return
    if args.device == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
        args.hidden, args.steps = min(args.hidden, 256), min(args.steps, 10)
    device = args.device
    _start_process_group(device)
    architecture = {"type": "mlp", "config": {"in_features": FEATURES, "num_classes": CLASSES,
                                              "hidden_sizes": [args.hidden] * 2, "dropout": 0.0}}
    training = training_figures(architecture, device, args.batch, args.steps)
    inference = inference_figures(architecture, device)
    print(json.dumps({
        "name": "gpu",
        "config": {
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke run)",
            "torch": torch.__version__, "cuda_build": torch.version.cuda,
            "model": architecture, "parameters": training.pop("parameters"),
            "batch": args.batch, "timed_steps": args.steps, "deepspeed_config": GPU_CONFIG,
        },
        "baseline": {"ddp_fp32_samples_per_s": training["ddp_fp32"]["samples_per_s"],
                     "inference_cpu_fp32_b1_p50_ms": inference["cpu_1_thread_fp32_b1"]["p50_ms"]},
        "figures": {"training": training, "inference": inference},
        "ratio": ratios_of(training, inference, device),
    }))  # fmt: skip


def _start_process_group(device: str) -> None:
    """Rank 0 of 1, made by DeepSpeed (NCCL on CUDA, gloo on the CPU)."""
    from cluster.trainers.ds_ops import use_venv_extensions

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")  # fmt: skip
    use_venv_extensions()  # FusedAdam compiles there on first use unless the image built it
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")


def _task(device: str, batch: int, steps: int) -> Any:
    import torch

    from cluster.data import DatasetInfo, PreparedData
    from cluster.trainers._tasks import ClassificationTask

    rng = np.random.default_rng(0)
    rows = batch * (steps + WARMUP_STEPS)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=rows).astype(np.int64)
    info = DatasetInfo("classification", num_features=FEATURES, num_classes=CLASSES)
    return ClassificationTask(PreparedData(info, x, y, x[:batch], y[:batch]), batch, 0,
                              torch.device(device))  # fmt: skip


def _timed(step: Callable[[Any], Any], task: Any, device: str, steps: int) -> float:
    """Seconds of ``steps`` steps after the warm-up ones (the GPU synchronised at both ends)."""
    import torch

    batches = task.train_batches(epoch=1, rank=0, world=1)
    for _ in range(WARMUP_STEPS):
        step(next(batches))
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _run(make_step: Callable[[], Callable[[Any], Any]], device: str, batch: int,
         steps: int) -> dict[str, float]:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = _timed(make_step(), _task(device, batch, steps), device, steps)
    figures = {"samples_per_s": round(steps * batch / seconds, 1),
               "step_ms": round(1000 * seconds / steps, 2)}
    if device == "cuda":
        figures["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return figures


def training_figures(architecture: dict[str, Any], device: str, batch: int,
                     steps: int) -> dict[str, Any]:
    """samples/s of DDP fp32, DDP bf16 autocast and ZeRO-2 bf16 on the same model and rows."""
    import torch
    from torch import nn

    from cluster.spec import resolve_config_path
    from cluster.trainers import ddp
    from cluster.trainers import deepspeed as ds
    from cluster.zoo import build_model, count_parameters

    def ddp_step(precision: str) -> Callable[[Any], Any]:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(build_model(architecture).to(device))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        task = _task(device, batch, 0)
        return lambda b: ddp.train_step(task, model, optimizer, b, precision)

    def zero2_step() -> Callable[[Any], Any]:
        torch.manual_seed(0)
        config = json.loads(resolve_config_path(GPU_CONFIG).read_text())
        config = ds.effective_config(config, {"batch_size": batch, "lr": 1e-3, "weight_decay": 0})
        if device == "cpu":  # FusedAdam is a CUDA kernel
            config["optimizer"]["params"]["torch_adam"] = True
        engine = ds.build_engine(build_model(architecture), config)
        task = _task(device, batch, 0)
        return lambda b: ds.train_step(task, engine, b)

    return {
        "parameters": count_parameters(build_model(architecture)),
        "ddp_fp32": _run(lambda: ddp_step("fp32"), device, batch, steps),
        "ddp_bf16_autocast": _run(lambda: ddp_step("bf16"), device, batch, steps),
        "zero2_bf16": _run(zero2_step, device, batch, steps),
    }


def _latency(runner: Any, rows: np.ndarray) -> dict[str, float]:
    for _ in range(10):
        runner.predict(rows)
    durations = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        runner.predict(rows)  # ends in .cpu(): the GPU's work is included
        durations.append(1000 * (time.perf_counter() - started))
    return {"p50_ms": round(float(np.percentile(durations, 50)), 3),
            "p95_ms": round(float(np.percentile(durations, 95)), 3)}


def inference_figures(architecture: dict[str, Any], device: str) -> dict[str, Any]:
    """Latency of one predict call (1 and 64 rows) on the device in fp32 and bf16, and on the
    CPU in fp32 with one torch thread (as a replica runs)."""
    import torch
    from safetensors.torch import save_file

    from cluster.zoo import build_model
    from serve_apps.inference.runners import WEIGHTS_FILE, TorchRunner

    rng = np.random.default_rng(1)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlaas-bench-gpu-") as tmp:
        save_file(build_model(architecture).state_dict(), str(Path(tmp) / WEIGHTS_FILE))
        spec = {"id": "bench", "framework": "pytorch", "architecture": architecture}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        cpu = TorchRunner(spec, Path(tmp), "cpu")
        for rows in (1, 64):
            batch = rng.normal(size=(rows, FEATURES)).astype(np.float32)
            figures[f"cpu_1_thread_fp32_b{rows}"] = _latency(cpu, batch)
        torch.set_num_threads(threads)
        runner = TorchRunner(spec, Path(tmp), device)
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            runner.model.to(dtype)
            for rows in (1, 64):
                batch = rng.normal(size=(rows, FEATURES)).astype(np.float32)
                figures[f"{device}_{name}_b{rows}"] = _latency(runner, batch)
    return figures


def ratios_of(training: dict[str, Any], inference: dict[str, Any],
              device: str) -> dict[str, float]:
    def rate(name: str) -> float:
        return float(training[name]["samples_per_s"])

    return {
        "zero2_bf16_vs_ddp_fp32": round(rate("zero2_bf16") / rate("ddp_fp32"), 3),
        "zero2_bf16_vs_ddp_bf16_autocast": round(
            rate("zero2_bf16") / rate("ddp_bf16_autocast"), 3),
        "ddp_bf16_autocast_vs_fp32": round(rate("ddp_bf16_autocast") / rate("ddp_fp32"), 3),
        f"inference_{device}_fp32_speedup_vs_cpu_b1_p50": round(
            inference["cpu_1_thread_fp32_b1"]["p50_ms"] / inference[f"{device}_fp32_b1"]["p50_ms"],
            3),
        f"inference_{device}_bf16_speedup_vs_fp32_b64_p50": round(
            inference[f"{device}_fp32_b64"]["p50_ms"] / inference[f"{device}_bf16_b64"]["p50_ms"],
            3),
    }  # fmt: skip


if __name__ == "__main__":
    main()
