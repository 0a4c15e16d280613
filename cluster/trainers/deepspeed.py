"""DeepSpeed ZeRO (stage 1/2/3, optimizer/parameter offload) inside Ray Train's ``TorchTrainer``.

Ray Train starts the workers and the process group (gloo on CPU, NCCL on GPU); DeepSpeed
wraps the model in its engine on top. Checkpoints are DeepSpeed's own (every rank writes its
shard of optimizer states, and for stage 3 of parameters), all uploaded into one Ray Train
checkpoint, so a restarted worker group reloads its shards. Next to them, rank 0 writes the
full weights as safetensors (gathered from the ZeRO-3 partitions), which are what the
registry keeps.

With ``bf16.enabled`` in the JSON (``configs/deepspeed/zero2-gpu-bf16.json``) DeepSpeed casts
the parameters to bf16 and keeps fp32 master weights in the optimizer; the batches stay float32,
so :func:`cast_inputs_to_parameter_dtype` casts them where they meet the parameters.
"""

from __future__ import annotations

import copy
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train.torch import TorchTrainer
from torch import nn

from cluster.spec import deepspeed_config
from cluster.trainers._plan import TrainingPlan, TrainOutcome
from cluster.trainers._tasks import build_task
from cluster.trainers._worker import (
    WEIGHTS_FILE,
    epoch_metrics,
    is_checkpoint_epoch,
    report_epoch,
    restored_attempt,
    save_weights,
    teacher_model,
    worker_data,
)
from cluster.trainers.ds_ops import use_venv_extensions
from cluster.zoo import build_model

CHECKPOINT_TAG = "ds"  # DeepSpeed's sub-folder inside each Ray Train checkpoint


def effective_config(config: dict[str, Any], hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The JSON config with the job's batch size, learning rate and weight decay filled in.

    The job's hyperparameters win over the file, so ``--set`` and Tune reach DeepSpeed too.
    """
    config = copy.deepcopy(config)
    config["train_micro_batch_size_per_gpu"] = hyperparameters["batch_size"]
    config.pop("train_batch_size", None)  # derived: micro batch x accumulation x world size
    config.setdefault("gradient_accumulation_steps", 1)
    optimizer = config.setdefault("optimizer", {"type": "AdamW", "params": {}})
    params = optimizer.setdefault("params", {})
    params["lr"] = hyperparameters["lr"]
    params["weight_decay"] = hyperparameters["weight_decay"]
    config.setdefault("steps_per_print", 1_000_000_000)
    return config


def zero_stage(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def full_state_dict(engine: Any, stage: int) -> dict[str, torch.Tensor]:
    """Complete weights on every rank; under ZeRO-3 the partitions are gathered first.

    A collective: every rank must call it.
    """
    module = engine.module
    if stage < 3:
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _cast_floating(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    return value


def _cast_arguments(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], *, dtype: torch.dtype
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (
        tuple(_cast_floating(a, dtype) for a in args),
        {k: _cast_floating(v, dtype) for k, v in kwargs.items()},
    )


def _outputs_to_float32(module: nn.Module, args: Any, output: Any) -> Any:
    return _cast_floating(output, torch.float32)


def cast_inputs_to_parameter_dtype(model: nn.Module) -> int:
    """Cast floating inputs of every module holding low-precision parameters to their dtype,
    and the model's floating output back to float32 (so the loss is computed in float32).

    DeepSpeed's bf16 casts parameters but keeps buffers (an MLP's standardisation statistics)
    in float32, and the batches are float32: one cast at the model's input would meet float32
    buffers and promote back, and would round raw features before standardisation. Casting at
    each parameterised module's entry does neither. Integer inputs (token ids) pass unchanged.

    Returns:
        How many modules got a cast (0 for an fp32 model, which is left untouched).
    """
    casting = 0
    for module in model.modules():
        dtypes = {p.dtype for p in module.parameters(recurse=False) if p.is_floating_point()}
        if len(dtypes) == 1 and (dtype := dtypes.pop()) != torch.float32:
            cast = partial(_cast_arguments, dtype=dtype)
            module.register_forward_pre_hook(cast, with_kwargs=True)
            casting += 1
    if casting:
        model.register_forward_hook(_outputs_to_float32)
    return casting


def build_engine(model: nn.Module, ds_config: dict[str, Any]) -> Any:
    """The DeepSpeed engine of a model (the process group must exist), its inputs cast to the
    parameters' dtype when the config trains in bf16 or fp16."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
        dist_init_required=False,
    )
    cast_inputs_to_parameter_dtype(engine.module)
    return engine


def train_step(task: Any, engine: Any, batch: Any) -> torch.Tensor:
    """One DeepSpeed step on a batch; returns the detached loss."""
    loss = task.loss(engine, batch)
    engine.backward(loss)
    engine.step()
    return loss.detach()  # type: ignore[no-any-return]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One DeepSpeed worker: build the engine, reload its shards if restarted, train, report."""
    use_venv_extensions()  # the ops `make install` compiled, not a minute of compiling here
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config["seed"])
    data = worker_data(config)
    task = build_task(config, data, device, teacher_model(config))
    model = build_model(config["architecture"])
    task.prepare(model)
    engine = build_engine(model, config["deepspeed"])
    with restored_attempt() as attempt:
        if attempt.folder is not None:
            engine.load_checkpoint(str(attempt.folder), tag=CHECKPOINT_TAG)
    _train_epochs(config, task, engine, attempt.start_epoch, attempt.step, rank, world)


def _train_epochs(
    config: dict[str, Any],
    task: Any,
    engine: Any,
    start_epoch: int,
    step: int,
    rank: int,
    world: int,
) -> None:
    epochs, every = config["epochs"], config["checkpoint_every"]
    stage = zero_stage(config["deepspeed"])
    if rank == 0:
        print(
            f"[train] ZeRO-{stage}: starting at epoch {start_epoch + 1}/{epochs} on {world} "
            "worker(s)",
            flush=True,
        )
    for epoch in range(start_epoch + 1, epochs + 1):
        started, total, samples = time.monotonic(), 0.0, 0
        engine.train()
        for batch in task.train_batches(epoch, rank, world):
            loss = train_step(task, engine, batch)
            step += 1
            total, samples = total + float(loss), samples + len(batch[0])
        metrics = epoch_metrics(
            task.evaluate(engine),
            epoch=epoch,
            epochs=epochs,
            step=step,
            start_epoch=start_epoch,
            train_loss=total / max(task.steps_per_epoch(world), 1),
            started=started,
            samples=samples * world,
        )

        def write(folder: Path) -> None:
            engine.save_checkpoint(str(folder), tag=CHECKPOINT_TAG)  # every rank: its shards
            weights = full_state_dict(engine, stage)  # collective under ZeRO-3
            if rank == 0:
                save_weights(weights, folder)

        due = is_checkpoint_epoch(epoch, every, epochs)
        report_epoch(
            metrics,
            epoch=epoch,
            step=step,
            write_checkpoint=write if due else None,
            contributes_checkpoint=True,
        )


def fit(plan: TrainingPlan) -> TrainOutcome:
    """Run the plan with DeepSpeed; raises ``ray.train.TrainingFailedError`` if it cannot finish."""
    ds_config = effective_config(
        deepspeed_config(plan.spec), plan.spec.hyperparameters.model_dump()
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=plan.worker_config(deepspeed=ds_config),
        scaling_config=plan.scaling_config(),
        run_config=plan.run_config(),
    )
    result = trainer.fit()
    metrics = {**(result.metrics or {}), "zero_stage": zero_stage(ds_config)}
    return TrainOutcome(result.checkpoint, metrics, "pytorch", WEIGHTS_FILE)
