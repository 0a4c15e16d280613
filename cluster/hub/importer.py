"""``mlaas hub import``: a local folder or a hub repo id (through ``huggingface_hub``, which
honours ``HF_HUB_OFFLINE`` and its cache) copied into the artifact store and registered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mlaas.errors import NotFoundError, ServiceUnavailableError, ValidationError
from mlaas.registry import ModelVersionInfo

FRAMEWORK = "huggingface"


def _fetch(source: str, revision: str | None) -> Path:
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if source.startswith((".", "/", "~")):
        raise NotFoundError(f"No folder {source!r}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=source, revision=revision))
    except Exception as exc:  # offline and not cached, unknown repo, no network...
        raise NotFoundError(
            f"Could not get {source!r} from the hub ({type(exc).__name__}); with "
            "HF_HUB_OFFLINE=1 it must be in the cache, or give a local folder"
        ) from exc


def describe(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Architecture, input and output schema of a transformers / sentence-transformers folder."""
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ValidationError(f"{folder} has no config.json: not a transformers model folder")
    config = json.loads(config_file.read_text())
    library = "sentence-transformers" if (folder / "modules.json").exists() else "transformers"
    architecture = {
        "type": "huggingface",
        "library": library,
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures", []),
        "hidden_size": config.get("hidden_size"),
    }
    output: dict[str, Any] = {"type": "embedding", "dimensions": config.get("hidden_size")}
    if config.get("id2label") and library == "transformers" and len(config["id2label"]) > 2:
        output = {"type": "classification", "classes": list(config["id2label"].values())}
    return architecture, {"type": "text"}, output


def import_model(
    source: str,
    *,
    database_url: str,
    storage: Any,
    tenant_id: str,
    name: str | None = None,
    revision: str | None = None,
) -> ModelVersionInfo:
    """Publish the model's files to the platform storage (a :class:`~mlaas.storage.Storage`,
    settings, or a local artifacts folder) and register them as a new version."""
    from mlaas.artifacts import publish_with
    from mlaas.storage import as_storage

    folder = _fetch(source, revision)
    architecture, input_schema, output_schema = describe(folder)
    model_name = name or folder.name.replace("models--", "").split("/")[-1]
    architecture["source"] = {"id": source, "revision": revision}

    def write(target: Path) -> None:
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".git*", "*.md"),
                        dirs_exist_ok=True)  # fmt: skip

    return publish_with(
        database_url, write, tenant_id=tenant_id, model_name=model_name,
        storage=as_storage(storage), framework=FRAMEWORK, architecture=architecture,
        input_schema=input_schema, output_schema=output_schema, metrics={}, task="huggingface",
    )  # fmt: skip


def push_folder(
    folder: Path, repo_id: str, *, token: str | None = None, endpoint: str | None = None,
    private: bool = True,
) -> str:
    """Upload a folder to a hub repo (created when missing); returns the commit URL.

    Raises:
        ValidationError: the hub refused the request (bad token, bad repo id); the message
            carries the hub's reason, never the token.
        ServiceUnavailableError: the hub could not be reached, or offline mode is on.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except OfflineModeIsEnabled as exc:
        raise ServiceUnavailableError(
            "HF_HUB_OFFLINE is set: unset it to push to a hub", details={"repo_id": repo_id}
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise ValidationError(
            f"The hub refused the push ({status}): {_hub_reason(exc)}",
            details={"repo_id": repo_id, "status": status},
        ) from exc
    except Exception as exc:
        if not _is_transport_error(exc):
            raise
        raise ServiceUnavailableError(
            f"The hub at {endpoint or 'huggingface.co'} could not be reached "
            f"({exc.__class__.__name__})",
            details={"repo_id": repo_id},
        ) from exc
    return str(getattr(info, "commit_url", info))


def _is_transport_error(error: Exception) -> bool:
    # huggingface_hub's HTTP client (httpx or its fork httpx2) raises its own TransportError.
    return isinstance(error, ConnectionError) or any(
        cls.__name__ == "TransportError" for cls in type(error).__mro__
    )


def _hub_reason(error: Exception) -> str:
    response = getattr(error, "response", None)
    if response is None:
        return str(error)
    try:
        return str(response.json().get("error"))
    except ValueError:
        return (response.text or "")[:200]
