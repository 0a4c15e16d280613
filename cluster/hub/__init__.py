"""Hugging Face import and export: bring a model folder or hub repo into the registry, write a
registered version as safetensors or an ONNX graph (checked against PyTorch), push a folder
to a hub. Heavy libraries are imported inside the functions."""

from cluster.hub.export import ExportReport, export_version
from cluster.hub.importer import import_model, push_folder

__all__ = ["ExportReport", "export_version", "import_model", "push_folder"]
