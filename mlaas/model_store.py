"""What serving needs of the registry beyond :mod:`mlaas.registry`: model references, pages of
models, summaries for ``/v1/models``, a model's latest training job, and deleting a version.

A *model reference* is a version id (``mv_...``), ``<name>@<number>``, ``<name>@<stage>``,
``<name>@latest``, or a bare name (its production version, else its latest). Another
tenant's model or version is indistinguishable from a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from mlaas import registry
from mlaas.db import session_scope
from mlaas.errors import ConflictError, NotFoundError, ValidationError
from mlaas.registry import ModelVersion, ModelVersionInfo, RegisteredModel
from mlaas.training_jobs import TrainingJob, TrainingJobInfo


@dataclass(frozen=True)
class ModelPage:
    """One page of a tenant's models, newest first, with the total count."""

    models: list[dict[str, Any]]
    total: int


def resolve_version(url: str, tenant_id: str, reference: str) -> ModelVersionInfo:
    """The version a model reference names, for this tenant.

    Raises:
        NotFoundError: no such model or version for this tenant.
        ValidationError: the reference is malformed.
    """
    reference = (reference or "").strip()
    if not reference:
        raise ValidationError("model is required", details={"field": "model"})
    if reference.startswith("mv_"):
        return version_by_id(url, tenant_id, reference)
    name, _, selector = reference.partition("@")
    if selector:
        return registry.get_version(url, tenant_id, name, selector)
    try:
        return registry.get_version(url, tenant_id, name, "production")
    except NotFoundError:
        return registry.get_version(url, tenant_id, name, "latest")


def version_by_id(url: str, tenant_id: str, version_id: str) -> ModelVersionInfo:
    """A version by its id, if it belongs to the tenant."""
    with session_scope(url) as session:
        pair = session.execute(
            select(ModelVersion, RegisteredModel)
            .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
            .where(ModelVersion.id == version_id, RegisteredModel.tenant_id == tenant_id)
        ).first()
        if pair is None:
            raise NotFoundError(
                f"No model version {version_id!r}", details={"model": version_id}
            )
        return ModelVersionInfo.of(pair[0], pair[1])


def model_name_of(url: str, tenant_id: str, model_ref: str) -> str:
    """The name of a tenant's model given its id (``mdl_...``) or name."""
    if not model_ref.startswith("mdl_"):
        return model_ref
    with session_scope(url) as session:
        row = session.get(RegisteredModel, model_ref)
        if row is None or row.tenant_id != tenant_id:
            raise NotFoundError(f"No model {model_ref!r}", details={"model": model_ref})
        return row.name


def version_summary(version: ModelVersionInfo) -> dict[str, Any]:
    """A version as the API shows it (no local paths)."""
    return {
        "id": version.id,
        "model_id": version.model_id,
        "model_name": version.model_name,
        "version": version.version,
        "stage": version.stage,
        "framework": version.framework,
        "architecture": {k: v for k, v in version.architecture.items() if k != "folder"},
        "input_schema": version.input_schema,
        "output_schema": version.output_schema,
        "metrics": version.metrics,
        "training_job_id": version.training_job_id,
        "created_at": version.created_at,
    }


def model_summary(
    model: RegisteredModel, versions: list[ModelVersionInfo]
) -> dict[str, Any]:
    """A model with its headline figures, as ``GET /v1/models`` lists it."""
    newest = versions[-1] if versions else None
    production = next((v for v in reversed(versions) if v.stage == "production"), None)
    shown = production or newest
    accuracy = None
    if shown is not None:
        accuracy = shown.metrics.get("val_accuracy", shown.metrics.get("accuracy"))
    return {
        "id": model.id,
        "name": model.name,
        "type": model.task or (shown.output_schema.get("type", "") if shown else ""),
        "status": "ready" if versions else "empty",
        "accuracy": accuracy,
        "latest_version": newest.version if newest else None,
        "production_version": production.version if production else None,
        "num_versions": len(versions),
        "created_at": model.created_at.isoformat() + "Z",
    }


def list_models_page(url: str, tenant_id: str, *, limit: int, offset: int) -> ModelPage:
    """A page of the tenant's models with their versions summarised."""
    with session_scope(url) as session:
        total = session.scalar(
            select(func.count()).select_from(RegisteredModel).where(
                RegisteredModel.tenant_id == tenant_id
            )
        )
        rows = session.scalars(
            select(RegisteredModel)
            .where(RegisteredModel.tenant_id == tenant_id)
            .order_by(RegisteredModel.created_at.desc(), RegisteredModel.id)
            .limit(limit)
            .offset(offset)
        ).all()
        models = []
        for row in rows:
            versions = session.scalars(
                select(ModelVersion)
                .where(ModelVersion.model_id == row.id)
                .order_by(ModelVersion.version)
            ).all()
            models.append(model_summary(row, [ModelVersionInfo.of(v, row) for v in versions]))
        return ModelPage(models=models, total=int(total or 0))


def model_detail(url: str, tenant_id: str, model_ref: str) -> dict[str, Any]:
    """A model with every version (metrics, stage, schema)."""
    name = model_name_of(url, tenant_id, model_ref)
    versions = registry.list_versions(url, tenant_id, name)
    with session_scope(url) as session:
        row = session.scalars(
            select(RegisteredModel).where(
                RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == name
            )
        ).one()
        summary = model_summary(row, versions)
    return {**summary, "versions": [version_summary(v) for v in versions]}


def latest_training_job(url: str, tenant_id: str, model_ref: str) -> TrainingJobInfo | None:
    """The newest training job of a tenant's model (by id or name), None if it never had one.

    Raises:
        NotFoundError: no such model for this tenant.
    """
    name = model_name_of(url, tenant_id, model_ref)
    with session_scope(url) as session:
        model_id = session.scalar(
            select(RegisteredModel.id).where(
                RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == name
            )
        )
        if model_id is None:
            raise NotFoundError(f"No model {model_ref!r}", details={"model": model_ref})
        row = session.scalars(
            select(TrainingJob)
            .where(TrainingJob.tenant_id == tenant_id, TrainingJob.model_id == model_id)
            .order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc())
            .limit(1)
        ).first()
        return TrainingJobInfo.of(row) if row is not None else None


def delete_version(
    url: str, tenant_id: str, model_ref: str, number: int, *, remove_files: bool = True
) -> ModelVersionInfo:
    """Delete a version (and its artifact folder); a production version is refused.

    Raises:
        NotFoundError: no such model or version for this tenant.
        ConflictError: the version is in production (move it to staging first), or is a
            federated pool's (its model is reserved).
    """
    name = model_name_of(url, tenant_id, model_ref)
    version = registry.get_version(url, tenant_id, name, int(number))
    registry.check_deletable(url, tenant_id, name)  # a federated pool's versions stay
    if version.stage == "production":
        raise ConflictError(
            f"Version {number} of {name!r} is in production; promote another version or move "
            "this one to staging before deleting it",
            details={"model": name, "version": number, "stage": "production"},
        )
    with session_scope(url) as session:
        row = session.get(ModelVersion, version.id)
        if row is not None:
            session.delete(row)
    registry.registry_changed()
    if remove_files:
        from mlaas.artifacts import remove_version_files

        remove_version_files(version.artifact_uri)
    return version


def active_training_count(url: str, tenant_id: str) -> int:
    """The tenant's training jobs that are pending or running."""
    with session_scope(url) as session:
        count = session.scalar(
            select(func.count())
            .select_from(TrainingJob)
            .where(
                TrainingJob.tenant_id == tenant_id,
                TrainingJob.status.in_(("PENDING", "RUNNING")),
            )
        )
        return int(count or 0)
