"""The model registry: models and their versions per tenant, with weights on artifact storage.

A model is a name inside a tenant; each successful training run adds a version carrying its
framework, architecture, input/output schema, metrics, artifact URI and training job id, and
a stage (``staging`` or ``production``). Weights live on the platform storage as
safetensors (Keras models as ``.keras``); the registry stores only their URI, and
:mod:`mlaas.artifacts` publishes and fetches them.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from mlaas.db import Base, hold_row, session_scope, utcnow
from mlaas.errors import ConflictError, NotFoundError, ValidationError

STAGES = ("staging", "production")
Stage = Literal["staging", "production"]
VersionSelector = int | str  # a number, "latest", or a stage name
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RegisteredModel(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_models_tenant_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(60), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Who alone may add versions, and no one delete them (a federated pool's id; 0008)
    reserved_by: Mapped[str | None] = mapped_column(String(60), nullable=True)


_IN_PRODUCTION = text("stage = 'production'")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_number"),
        # At most one production version per model, whatever the writers (migration 0006).
        Index(
            "uq_model_versions_one_production",
            "model_id",
            unique=True,
            sqlite_where=_IN_PRODUCTION,
            postgresql_where=_IN_PRODUCTION,
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    framework: Mapped[str] = mapped_column(String(40))
    architecture: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output_schema: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact_uri: Mapped[str] = mapped_column(String(1000))
    training_job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    stage: Mapped[str] = mapped_column(String(20), default="staging")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    tenant_id: str
    name: str
    task: str
    created_at: str
    latest_version: int | None


@dataclass(frozen=True)
class ModelVersionInfo:
    id: str
    model_id: str
    model_name: str
    tenant_id: str
    version: int
    framework: str
    architecture: dict[str, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    metrics: dict[str, Any]
    artifact_uri: str
    training_job_id: str | None
    stage: str
    created_at: str

    @classmethod
    def of(cls, row: ModelVersion, model: RegisteredModel) -> ModelVersionInfo:
        return cls(
            id=row.id,
            model_id=model.id,
            model_name=model.name,
            tenant_id=model.tenant_id,
            version=row.version,
            framework=row.framework,
            architecture=dict(row.architecture or {}),
            input_schema=dict(row.input_schema or {}),
            output_schema=dict(row.output_schema or {}),
            metrics=dict(row.metrics or {}),
            artifact_uri=row.artifact_uri,
            training_job_id=row.training_job_id,
            stage=row.stage,
            created_at=row.created_at.isoformat() + "Z",
        )

    @property
    def artifact_path(self) -> Path:
        """A local folder with the version's files (fetched into this node's cache if the
        storage is remote)."""
        from mlaas.artifacts import version_folder

        return version_folder(self)


def check_model_name(name: str) -> str:
    """Model names are path-safe: letters, digits, dot, dash and underscore, up to 100."""
    if not _MODEL_NAME.match(name or ""):
        raise ValidationError(
            "Model name must be 1-100 letters, digits, '.', '-' or '_', starting with a letter "
            "or digit",
            details={"field": "name", "received": name},
        )
    return name


def ensure_model(
    url: str, tenant_id: str, name: str, *, task: str = "", reservation: str | None = None
) -> ModelInfo:
    """The tenant's model of this name, created when it does not exist yet.

    Args:
        reservation: who the caller registers for (a federated pool's id); a model reserved
            by someone else is refused.

    Raises:
        ConflictError: the model is reserved by another holder (a federated pool).
    """
    check_model_name(name)
    for _ in range(3):
        try:
            with session_scope(url) as session:
                row = _model_row(session, tenant_id, name)
                if row is None:
                    row = RegisteredModel(
                        id="mdl_" + secrets.token_hex(8), tenant_id=tenant_id, name=name, task=task
                    )
                    session.add(row)
                    session.flush()
                _check_reservation(row, reservation, "register a version under")
                return _model_info(session, row)
        except IntegrityError:
            continue  # created concurrently; read it on the next pass
    raise ConflictError(f"Could not create model {name!r}; retry")


def reserve_model(url: str, tenant_id: str, name: str, holder: str) -> ModelInfo:
    """Create the model reserved for ``holder``: only registrations for it add versions, and
    no version can be deleted.

    Raises:
        ConflictError: the tenant has a model of that name already.
    """
    check_model_name(name)
    try:
        with session_scope(url) as session:
            row = RegisteredModel(
                id="mdl_" + secrets.token_hex(8), tenant_id=tenant_id, name=name,
                reserved_by=holder,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return _model_info(session, row)
    except IntegrityError as exc:
        raise ConflictError(
            f"A model named {name!r} exists already", details={"field": "name", "model": name}
        ) from exc


def check_deletable(url: str, tenant_id: str, name: str) -> None:
    """Refuse deleting a version of a reserved model (a federated pool's global versions).

    Raises:
        ConflictError: the model is reserved.
    """
    with session_scope(url) as session:
        row = _model_row(session, tenant_id, name)
        if row is not None:
            _check_reservation(row, None, "delete a version of")


def _check_reservation(row: RegisteredModel, reservation: str | None, action: str) -> None:
    if row.reserved_by is not None and row.reserved_by != reservation:
        raise ConflictError(
            f"Model {row.name!r} is reserved by federated pool {row.reserved_by}: nobody else "
            f"may {action} it; choose another model name",
            details={"model": row.name, "reserved_by": row.reserved_by},
        )


def next_version_number(url: str, tenant_id: str, model_name: str) -> int:
    """The number the next registered version of this model will most likely get."""
    with session_scope(url) as session:
        model = _model_row(session, tenant_id, model_name)
        return 1 if model is None else _latest_number(session, model.id) + 1


def register_version(
    url: str,
    *,
    tenant_id: str,
    model_name: str,
    framework: str,
    artifact_uri: str,
    architecture: dict[str, Any],
    input_schema: dict[str, Any],
    output_schema: dict[str, Any],
    metrics: dict[str, Any],
    training_job_id: str | None = None,
    version: int | None = None,
    stage: Stage = "staging",
    task: str = "",
    version_id: str | None = None,
    reservation: str | None = None,
) -> ModelVersionInfo:
    """Add a version to a tenant's model (creating the model on first use).

    ``reservation`` names who registers (a federated pool's id); a model reserved by another
    holder refuses the version (:func:`reserve_model`).

    ``version_id`` is the caller's id for the row (``mv_...``), chosen before its files
    were uploaded under it; by default a new one.

    ``version`` pins the number (the caller placed the artifacts at that number's folder);
    without it the next free number is taken. Registering straight into production moves
    the previous production version to staging, as :func:`set_stage` does.

    Raises:
        ConflictError: when the pinned number is already taken, or the model is reserved.
    """
    if stage not in STAGES:
        raise ValidationError(f"stage must be one of {STAGES}", details={"field": "stage"})
    model = ensure_model(url, tenant_id, model_name, task=task, reservation=reservation)
    try:
        with session_scope(url) as session:
            _lock_model(session, model.id)  # concurrent registrations take numbers in turn
            number = version or _latest_number(session, model.id) + 1
            if stage == "production":
                _demote_production(session, model.id)
            row = ModelVersion(
                id=version_id or "mv_" + secrets.token_hex(8),
                model_id=model.id,
                version=number,
                framework=framework,
                architecture=architecture,
                input_schema=input_schema,
                output_schema=output_schema,
                metrics=metrics,
                artifact_uri=artifact_uri,
                training_job_id=training_job_id,
                stage=stage,
            )
            session.add(row)
            session.flush()
            model_row = session.get(RegisteredModel, model.id)
            assert model_row is not None
            registered = ModelVersionInfo.of(row, model_row)
    except IntegrityError as exc:
        raise ConflictError(
            f"Version {version} of model {model_name!r} already exists",
            details={"model": model_name, "version": version},
        ) from exc
    registry_changed()
    return registered


def list_models(url: str, tenant_id: str) -> list[ModelInfo]:
    with session_scope(url) as session:
        rows = session.scalars(
            select(RegisteredModel)
            .where(RegisteredModel.tenant_id == tenant_id)
            .order_by(RegisteredModel.created_at)
        ).all()
        return [_model_info(session, row) for row in rows]


def list_versions(url: str, tenant_id: str, model_name: str) -> list[ModelVersionInfo]:
    with session_scope(url) as session:
        model = _require_model(session, tenant_id, model_name)
        rows = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.model_id == model.id)
            .order_by(ModelVersion.version)
        ).all()
        return [ModelVersionInfo.of(row, model) for row in rows]


def get_version(
    url: str, tenant_id: str, model_name: str, selector: VersionSelector = "latest"
) -> ModelVersionInfo:
    """A version by number, ``"latest"``, or stage (the newest version in that stage).

    Raises:
        NotFoundError: no such model or version for this tenant.
    """
    with session_scope(url) as session:
        model = _require_model(session, tenant_id, model_name)
        query = select(ModelVersion).where(ModelVersion.model_id == model.id)
        if isinstance(selector, int) or str(selector).isdigit():
            query = query.where(ModelVersion.version == int(selector))
        elif selector in STAGES:
            query = query.where(ModelVersion.stage == selector)
        elif selector != "latest":
            raise ValidationError(
                f"Version must be a number, 'latest' or a stage {STAGES} (got {selector!r})",
                details={"field": "version", "received": selector},
            )
        row = session.scalars(query.order_by(ModelVersion.version.desc()).limit(1)).first()
        if row is None:
            raise NotFoundError(
                f"Model {model_name!r} has no version {selector!r}",
                details={"model": model_name, "version": selector},
            )
        return ModelVersionInfo.of(row, model)


def versions_of_job(url: str, training_job_id: str) -> list[ModelVersionInfo]:
    """Every version a training job registered (none when it failed)."""
    with session_scope(url) as session:
        pairs = session.execute(
            select(ModelVersion, RegisteredModel)
            .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
            .where(ModelVersion.training_job_id == training_job_id)
        ).all()
        return [ModelVersionInfo.of(version, model) for version, model in pairs]


def set_stage(
    url: str, tenant_id: str, model_name: str, version: int, stage: Stage
) -> ModelVersionInfo:
    """Move a version to a stage; promoting one to production moves the previous one to staging."""
    if stage not in STAGES:
        raise ValidationError(f"stage must be one of {STAGES}", details={"field": "stage"})
    with session_scope(url) as session:
        model = _require_model(session, tenant_id, model_name)
        _lock_model(session, model.id)  # concurrent promotions apply one after the other
        target = session.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.version == version
            )
        ).first()
        if target is None:
            raise NotFoundError(f"Model {model_name!r} has no version {version}")
        if stage == "production" and target.stage != "production":
            _demote_production(session, model.id)
        target.stage = stage
        session.flush()
        changed = ModelVersionInfo.of(target, model)
    registry_changed()
    return changed


def registry_changed() -> None:
    """After a committed change: gateway replicas drop the versions they resolved."""
    from mlaas.admission import notify_registry_changed

    notify_registry_changed()


def _model_row(session: Session, tenant_id: str, name: str) -> RegisteredModel | None:
    return session.scalars(
        select(RegisteredModel).where(
            RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == name
        )
    ).first()


def _require_model(session: Session, tenant_id: str, name: str) -> RegisteredModel:
    # Another tenant's model is indistinguishable from a missing one.
    row = _model_row(session, tenant_id, name)
    if row is None:
        raise NotFoundError(f"No model named {name!r}", details={"model": name})
    return row


def _lock_model(session: Session, model_id: str) -> None:
    """Hold the model's row until the transaction ends, so that writers of its versions
    (numbering, stage changes) go one at a time."""
    hold_row(session, RegisteredModel, model_id, RegisteredModel.task)


def _demote_production(session: Session, model_id: str) -> None:
    """The model's production version back to staging (before another one is promoted: the
    partial unique index checks each statement)."""
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.model_id == model_id, ModelVersion.stage == "production")
        .values(stage="staging")
    )


def _latest_number(session: Session, model_id: str) -> int:
    latest = session.scalars(
        select(ModelVersion.version)
        .where(ModelVersion.model_id == model_id)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    ).first()
    return int(latest or 0)


def _model_info(session: Session, row: RegisteredModel) -> ModelInfo:
    latest = _latest_number(session, row.id)
    return ModelInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        task=row.task,
        created_at=row.created_at.isoformat() + "Z",
        latest_version=latest or None,
    )
