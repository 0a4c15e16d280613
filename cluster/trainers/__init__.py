"""Trainers, one module per strategy: ``ddp``, ``deepspeed``, ``tensorflow``.

Each exposes ``fit(plan: TrainingPlan) -> TrainOutcome`` and a ``train_loop_per_worker``;
they share the task hooks in ``_tasks`` and the checkpoint and report helpers in ``_worker``.
"""

from cluster.trainers._plan import TrainingPlan, TrainOutcome

__all__ = ["TrainOutcome", "TrainingPlan"]
