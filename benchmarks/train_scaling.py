"""Training throughput and memory: a plain PyTorch loop vs Ray Train DDP vs DeepSpeed ZeRO.

In one run, on the same model and synthetic data:

- samples/s of (a) a plain single-process loop, (b) Ray Train DDP with 1 and 2 workers,
  (c) DeepSpeed ZeRO-2 and ZeRO-3 with 2 workers (each worker 1 CPU, 1 torch thread);
- per-worker memory of model states (parameters, gradients, optimizer states and the
  strategy's buffers) for DDP and ZeRO-3 with 2 workers, on an MLP of about 38 M parameters:
  the bytes of every live tensor after a few steps minus those before the model was built
  (ZeRO-3 builds it partitioned, under ``deepspeed.zero.Init``); the growth of the worker's
  peak resident memory is reported next to it.

Starts a Ray cluster of its own (``ray.init(address="local")``), stopped when it ends.
Prints one JSON object.

    .venv/bin/python benchmarks/train_scaling.py [--steps 60] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

THROUGHPUT_MODEL = {"in_features": 256, "hidden": [1024, 1024], "classes": 10}
MEMORY_MODEL = {"in_features": 1024, "hidden": [4096, 4096, 4096], "classes": 10}
BATCH = 64
WARMUP_STEPS = 5
ROUNDS = 3
DS_BASE = {
    "train_micro_batch_size_per_gpu": BATCH,
    "gradient_accumulation_steps": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
    "steps_per_print": 10**9,
}


def mlp(shape: dict[str, Any]) -> nn.Module:
    layers: list[nn.Module] = []
    width = shape["in_features"]
    for hidden in shape["hidden"]:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, shape["classes"]))
    return nn.Sequential(*layers)


def batch_of(shape: dict[str, Any], step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(BATCH, shape["in_features"], generator=generator)
    return x, torch.randint(0, shape["classes"], (BATCH,), generator=generator)


def timed_steps(step_fn: Any, shape: dict[str, Any], steps: int, rounds: int = ROUNDS) -> float:
    """Median seconds of ``rounds`` rounds of ``steps`` steps, after the warm-up ones."""
    for i in range(WARMUP_STEPS):
        step_fn(*batch_of(shape, i))
    durations = []
    for r in range(rounds):
        started = time.perf_counter()
        for i in range(steps):
            step_fn(*batch_of(shape, WARMUP_STEPS + r * steps + i))
        durations.append(time.perf_counter() - started)
    return sorted(durations)[len(durations) // 2]


def live_tensor_mb() -> float:
    """Memory of every tensor alive in this process (each storage once): parameters,
    gradients, optimizer states and the strategy's own buffers."""
    import gc

    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) / 2**20


def plain_loop(steps: int, rounds: int = ROUNDS) -> float:
    """(a) samples/s of one process, one thread, no Ray."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = mlp(THROUGHPUT_MODEL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return steps * BATCH / timed_steps(step, THROUGHPUT_MODEL, steps, rounds)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ddp_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = config["shape"]
    before = (live_tensor_mb(), peak_rss_mb())
    model = ray.train.torch.prepare_model(mlp(shape))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    seconds = timed_steps(step, shape, config["steps"], config["rounds"])
    _report(config, seconds, live_tensor_mb() - before[0], peak_rss_mb() - before[1])


def deepspeed_worker(config: dict[str, Any]) -> None:
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape, ds_config = config["shape"], config["deepspeed"]
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    before = (live_tensor_mb(), peak_rss_mb())
    if ds_config["zero_optimization"]["stage"] == 3:
        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            model = mlp(shape)  # built partitioned: no worker ever holds all of it
    else:
        model = mlp(shape)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config, dist_init_required=False
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        engine.backward(F.cross_entropy(engine(x.to(dtype)).float(), y))
        engine.step()

    seconds = timed_steps(step, shape, config["steps"], config["rounds"])
    _report(config, seconds, live_tensor_mb() - before[0], peak_rss_mb() - before[1])


def _report(config: dict[str, Any], seconds: float, states_mb: float, rss_mb: float) -> None:
    """Rank 0 writes the slowest worker's time and the largest worker's memory (all-reduced)."""
    import ray.train
    import torch.distributed as dist

    context = ray.train.get_context()
    figures = torch.tensor([seconds, states_mb, rss_mb], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(figures, op=dist.ReduceOp.MAX)
    result = {
        "samples_per_s": config["steps"] * BATCH * context.get_world_size() / float(figures[0]),
        "model_state_mb_per_worker": float(figures[1]),
        "peak_rss_growth_mb_per_worker": float(figures[2]),
    }
    if context.get_world_rank() == 0:  # V2 keeps metrics only with checkpoints: use a file
        Path(config["result_file"]).write_text(json.dumps(result))
    ray.train.report(result)


def ray_run(worker: Any, workers: int, config: dict[str, Any]) -> dict[str, float]:
    """Run ``worker`` on Ray Train workers: samples/s and the largest worker's memory."""
    from ray.train.v2.api.config import RunConfig, ScalingConfig  # what ray.train exports in V2
    from ray.train.v2.torch.torch_trainer import TorchTrainer

    env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    result_file = Path(tempfile.mkdtemp(prefix="mlaas-bench-")) / "result.json"
    trainer = TorchTrainer(
        worker,
        train_loop_config={**config, "result_file": str(result_file)},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            storage_path="/tmp/mlaas-bench-train", worker_runtime_env={"env_vars": env}
        ),
    )
    trainer.fit()
    return {k: round(v, 1) for k, v in json.loads(result_file.read_text()).items()}


def zero_config(stage: int, bf16: bool = False) -> dict[str, Any]:
    # Buckets of 10 M elements: DeepSpeed's defaults (500 M) reserve 2 GB buffers up front.
    buckets = 10_000_000
    zero: dict[str, Any] = {"stage": stage, "reduce_bucket_size": buckets}
    if stage == 3:
        zero.update(
            stage3_param_persistence_threshold=0,
            stage3_prefetch_bucket_size=buckets,
            stage3_max_live_parameters=buckets,
            stage3_max_reuse_distance=buckets,
            sub_group_size=buckets,
        )
    else:
        zero["allgather_bucket_size"] = buckets
    return {**DS_BASE, "bf16": {"enabled": bf16}, "zero_optimization": zero}


def throughput_figures(steps: int) -> dict[str, Any]:
    """(a) the plain loop (before and after the Ray runs, the better one), (b) DDP, (c) ZeRO."""
    run = {"shape": THROUGHPUT_MODEL, "steps": steps, "rounds": ROUNDS}
    first_plain = plain_loop_in_a_process(steps)
    figures: dict[str, Any] = {
        "ddp_1_worker": ray_run(ddp_worker, 1, run),
        "ddp_2_workers": ray_run(ddp_worker, 2, run),
        "zero2_2_workers": ray_run(deepspeed_worker, 2, {**run, "deepspeed": zero_config(2)}),
        "zero3_2_workers": ray_run(deepspeed_worker, 2, {**run, "deepspeed": zero_config(3)}),
    }
    figures["plain_loop_samples_per_s"] = round(max(first_plain, plain_loop_in_a_process(steps)), 1)
    return figures


def plain_loop_in_a_process(steps: int) -> float:
    """(a) in a fresh process without Ray, one thread (as each Ray Train worker gets)."""
    result = subprocess.run(
        [sys.executable, __file__, "--plain-only", "--steps", str(steps)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(result.stdout.strip().splitlines()[-1])


def memory_figures(steps: int) -> dict[str, Any]:
    """Model-state memory per worker at 2 workers: DDP (fp32) vs ZeRO-3 (fp32, and bf16 mixed
    precision, the setting of the ZeRO paper's 16 bytes/parameter accounting)."""
    run = {"shape": MEMORY_MODEL, "steps": steps, "rounds": 1}
    return {
        "memory_model_parameters": sum(p.numel() for p in mlp(MEMORY_MODEL).parameters()),
        "memory_ddp_2_workers": ray_run(ddp_worker, 2, run),
        "memory_zero3_2_workers": ray_run(
            deepspeed_worker, 2, {**run, "deepspeed": zero_config(3)}
        ),
        "memory_zero3_bf16_2_workers": ray_run(
            deepspeed_worker, 2, {**run, "deepspeed": zero_config(3, bf16=True)}
        ),
    }


def ratios_of(figures: dict[str, Any]) -> dict[str, float]:
    def rate(name: str) -> float:
        return float(figures[name]["samples_per_s"])

    ratios = {
        "ddp_1_worker_vs_plain": round(
            rate("ddp_1_worker") / figures["plain_loop_samples_per_s"], 3
        ),
        "ddp_2_vs_1_workers": round(rate("ddp_2_workers") / rate("ddp_1_worker"), 3),
        "zero2_vs_ddp_2_workers": round(rate("zero2_2_workers") / rate("ddp_2_workers"), 3),
        "zero3_vs_ddp_2_workers": round(rate("zero3_2_workers") / rate("ddp_2_workers"), 3),
    }
    if "memory_ddp_2_workers" in figures:
        ddp = figures["memory_ddp_2_workers"]["model_state_mb_per_worker"]
        for variant in ("zero3", "zero3_bf16"):
            states = figures[f"memory_{variant}_2_workers"]["model_state_mb_per_worker"]
            ratios[f"{variant}_vs_ddp_model_state_memory"] = round(states / ddp, 3)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_only:
        print(plain_loop(args.steps))
        return

    import ray

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    ray.init(address="local", num_cpus=2, logging_level=logging.ERROR, log_to_driver=False)
    figures = throughput_figures(args.steps)
    if not args.skip_memory:
        figures.update(memory_figures(args.memory_steps))
    ray.shutdown()
    config = {
        "throughput_model": THROUGHPUT_MODEL, "memory_model": MEMORY_MODEL,
        "batch_per_worker": BATCH, "timed_steps_per_round": args.steps, "rounds": ROUNDS,
        "cpus_per_worker": 1, "torch_threads": 1, "cpus": os.cpu_count(),
    }  # fmt: skip
    print(json.dumps({
        "name": "train_scaling",
        "config": config,
        "baseline": {"plain_loop_samples_per_s": figures["plain_loop_samples_per_s"]},
        "figures": figures,
        "ratio": ratios_of(figures),
        "targets": {"ddp_1_worker_vs_plain": ">= 0.9", "zero3_vs_ddp_model_state_memory": "<= 0.6"},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
