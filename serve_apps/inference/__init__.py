"""Model inference: the ``inference`` Serve application (multiplexed, batched, any registered
version: PyTorch, Keras, ONNX), input-schema checks, and the gateway's client. This top level
stays light (no torch), because the gateway imports it; the deployment is in
:mod:`serve_apps.inference.deployment`."""

from serve_apps.inference.client import InferenceClient, inference_client, version_spec


def app_builder(args: dict) -> object:  # type: ignore[type-arg]
    """Serve application builder for ``import_path: serve_apps.inference:app_builder``."""
    from serve_apps.inference.deployment import app_builder as build

    return build(args)


__all__ = ["InferenceClient", "app_builder", "inference_client", "version_spec"]
