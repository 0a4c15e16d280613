"""bf16 training proven on the CPU: one DeepSpeed bf16 step (on DeepSpeed's CPU accelerator,
or CUDA when there is one) with float32 batches fed to a bf16 model, and one DDP step under
bf16 autocast. Each runs in this process as a single rank of a one-process group; no Ray."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cluster.data import DatasetInfo, PreparedData
from cluster.errors import SpecError
from cluster.spec import resolve_config_path, validate_spec
from cluster.trainers import ddp
from cluster.trainers._tasks import ClassificationTask
from cluster.zoo import build_model

GPU_CONFIG = "configs/deepspeed/zero2-gpu-bf16.json"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
MLP = {"type": "mlp", "config": {"in_features": 8, "num_classes": 3, "hidden_sizes": [16],
                                 "dropout": 0.0}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def process_group() -> Iterator[str]:
    """A one-rank process group (gloo on CPU, NCCL on CUDA) made by DeepSpeed, as a worker's.

    Yields:
        The device the rank trains on.
    """
    from cluster.trainers.ds_ops import extensions_dir

    with pytest.MonkeyPatch.context() as env:
        for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                            "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                            "LOCAL_WORLD_SIZE": "1"}.items():  # fmt: skip
            env.setenv(name, value)
        if not CUDA:
            env.setenv("DS_ACCELERATOR", "cpu")
        # DeepSpeed's shared-memory op as `make install` compiled it (see ds_ops)
        env.setenv("TORCH_EXTENSIONS_DIR",
                   os.environ.get("TORCH_EXTENSIONS_DIR", str(extensions_dir())))
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if CUDA else "gloo")
        try:
            yield "cuda" if CUDA else "cpu"
        finally:
            torch.distributed.destroy_process_group()


def _task(device: str, rows: int = 32) -> ClassificationTask:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(rows, 8)) * 50 + 1000).astype(np.float32)  # raw, unstandardised
    y = rng.integers(0, 3, size=rows).astype(np.int64)
    data = PreparedData(DatasetInfo("classification", num_features=8, num_classes=3), x, y, x, y)
    return ClassificationTask(data, batch_size=8, seed=0, device=torch.device(device))


def _linear_input_dtypes(model: nn.Module) -> list[torch.dtype]:
    """Records the dtype each Linear layer receives (hooks run after the platform's casts)."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    return seen


def _last_linear(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _deepspeed_config(on_cpu: bool) -> dict[str, Any]:
    from cluster.trainers.deepspeed import effective_config

    config = json.loads(resolve_config_path(GPU_CONFIG).read_text())
    config = effective_config(config, {"batch_size": 8, "lr": 1e-2, "weight_decay": 0.0})
    if on_cpu:  # FusedAdam is a CUDA kernel; the casts under test do not depend on it
        config["optimizer"]["params"]["torch_adam"] = True
        config["zero_optimization"]["overlap_comm"] = False
    return config


def test_the_gpu_deepspeed_config_trains_bf16_with_fused_adam() -> None:
    config = json.loads(resolve_config_path(GPU_CONFIG).read_text())

    assert config["bf16"] == {"enabled": True}
    assert config["zero_optimization"]["stage"] == 2
    assert config["optimizer"]["type"] == "AdamW"
    assert "torch_adam" not in config["optimizer"]["params"], "no torch_adam: FusedAdam"


def test_a_deepspeed_bf16_step_takes_float32_batches_into_a_bf16_model(
    process_group: str,
) -> None:
    # Prepare: the engine of a tiny MLP from the GPU config, as a worker builds it
    from cluster.trainers.deepspeed import build_engine, train_step

    torch.manual_seed(0)
    task = _task(process_group)
    model = build_model(MLP)
    task.prepare(model)
    engine = build_engine(model, _deepspeed_config(on_cpu=process_group == "cpu"))
    before = [p.detach().float().clone() for p in engine.module.parameters()]
    received = _linear_input_dtypes(engine.module)
    batch = next(task.train_batches(epoch=1, rank=0, world=1))
    # Execute
    loss = train_step(task, engine, batch)
    metrics = task.evaluate(engine)
    # Assert
    from deepspeed.accelerator import get_accelerator

    assert get_accelerator().device_name() == process_group  # cpu here: the CPU accelerator
    assert batch[0].dtype == torch.float32
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}
    assert set(received) == {torch.bfloat16}
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert any(not torch.equal(b, p.detach().float())
               for b, p in zip(before, engine.module.parameters(), strict=True)), "a step"
    assert np.isfinite(metrics["val_loss"])


def test_an_fp32_deepspeed_model_gets_no_casts() -> None:
    from cluster.trainers.deepspeed import cast_inputs_to_parameter_dtype

    model = build_model(MLP)

    assert cast_inputs_to_parameter_dtype(model) == 0
    assert model(torch.ones(2, 8)).dtype == torch.float32


def test_a_ddp_step_under_bf16_autocast_keeps_fp32_weights(process_group: str) -> None:
    # Prepare: a tiny MLP wrapped in DDP, its optimizer, and a float32 batch
    torch.manual_seed(0)
    task = _task(process_group)
    model = build_model(MLP)
    task.prepare(model)
    model = nn.parallel.DistributedDataParallel(model.to(process_group))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    received = _linear_input_dtypes(model)
    outputs: list[torch.dtype] = []
    _last_linear(model).register_forward_hook(lambda _m, _a, out: outputs.append(out.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    batch = next(task.train_batches(epoch=1, rank=0, world=1))
    # Execute
    loss = ddp.train_step(task, model, optimizer, batch, precision="bf16")
    # Assert: float32 in, bf16 activations and logits, fp32 weights and update
    assert batch[0].dtype == torch.float32
    assert received == [torch.float32, torch.bfloat16] and outputs == [torch.bfloat16]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.isfinite(loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_an_fp32_ddp_step_runs_without_autocast(process_group: str) -> None:
    task = _task(process_group)
    model = build_model(MLP).to(process_group)
    task.prepare(model)
    outputs: list[torch.dtype] = []
    _last_linear(model).register_forward_hook(lambda _m, _a, out: outputs.append(out.dtype))

    ddp.train_step(task, model, torch.optim.AdamW(model.parameters()),
                   next(task.train_batches(1, 0, 1)))

    assert outputs == [torch.float32]


@pytest.mark.parametrize(("strategy", "field_reason"), [
    ({"type": "deepspeed"}, "zero2-gpu-bf16.json"),
    ({"type": "tensorflow"}, "ddp strategy"),
])
def test_precision_bf16_is_refused_outside_ddp(strategy: dict[str, Any], field_reason: str) -> None:
    raw = {"name": "p", "model": {"type": "mlp"}, "data": {"source": "builtin:iris"},
           "strategy": strategy, "hyperparameters": {"precision": "bf16"}}

    with pytest.raises(SpecError, match=field_reason) as refused:
        validate_spec(raw)

    assert refused.value.field == "hyperparameters.precision"


def test_precision_takes_fp32_or_bf16() -> None:
    raw = {"name": "p", "model": {"type": "mlp"}, "data": {"source": "builtin:iris"}}

    bf16 = validate_spec({**raw, "hyperparameters": {"precision": "bf16"}})

    assert validate_spec(raw).hyperparameters.precision == "fp32"
    assert bf16.hyperparameters.precision == "bf16"
    with pytest.raises(SpecError, match="hyperparameters.precision"):
        validate_spec({**raw, "hyperparameters": {"precision": "fp16"}})


@pytest.mark.gpu
@needs_cuda
def test_the_gpu_config_builds_fused_adam_on_cuda(process_group: str) -> None:
    from deepspeed.ops.adam import FusedAdam

    from cluster.trainers.deepspeed import build_engine, train_step

    task = _task("cuda")
    model = build_model(MLP)
    task.prepare(model)
    engine = build_engine(model, _deepspeed_config(on_cpu=False))

    loss = train_step(task, engine, next(task.train_batches(1, 0, 1)))

    assert isinstance(engine.optimizer.optimizer, FusedAdam)
    assert torch.isfinite(loss)


@pytest.mark.gpu
@needs_cuda
def test_a_ddp_bf16_step_on_cuda(process_group: str) -> None:
    task = _task("cuda")
    model = build_model(MLP)
    task.prepare(model)
    model = model.cuda()

    loss = ddp.train_step(task, model, torch.optim.AdamW(model.parameters()),
                          next(task.train_batches(1, 0, 1)), precision="bf16")

    assert torch.isfinite(loss)
