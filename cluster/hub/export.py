"""``mlaas hub export``: a registered version as safetensors (copied with its architecture) or
an ONNX graph from ``torch.onnx.export``, run under ONNX Runtime on sample inputs and compared
with PyTorch's outputs (the max abs difference is reported, and must be under a tolerance)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlaas.errors import ValidationError
from mlaas.registry import ModelVersionInfo

TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportReport:
    path: str
    format: str
    max_abs_diff: float | None = None
    samples: int = 0


def _hidden_states_module() -> Any:
    import torch

    class HiddenStates(torch.nn.Module):
        """A transformers encoder called by keyword, returning its last hidden state."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state

    return HiddenStates


def _HiddenStates(encoder: Any) -> Any:  # noqa: N802 - reads as the class it builds
    return _hidden_states_module()(encoder).eval()


def _torch_module(version: ModelVersionInfo) -> tuple[Any, tuple[Any, ...], list[str]]:
    """The version as an eval-mode module, sample inputs, and input names."""
    import torch

    folder = version.artifact_path
    if version.framework == "huggingface":
        from transformers import AutoModel, AutoTokenizer

        model = _HiddenStates(AutoModel.from_pretrained(str(folder)).eval())
        tokens = AutoTokenizer.from_pretrained(str(folder))(
            ["a sample sentence", "another, longer sample sentence"], padding=True,
            return_tensors="pt")
        return model, (tokens["input_ids"], tokens["attention_mask"]), [
            "input_ids", "attention_mask"]
    if version.framework != "pytorch":
        raise ValidationError(f"Only pytorch and huggingface versions export (got "
                              f"{version.framework})")
    from safetensors.torch import load_file

    from cluster.zoo import build_model

    architecture = {k: v for k, v in version.architecture.items() if k in ("type", "config")}
    model = build_model(architecture)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    width = int(version.input_schema.get("shape", [architecture["config"]["in_features"]])[0])
    sample = torch.from_numpy(np.random.default_rng(0).normal(size=(8, width)).astype("float32"))
    return model.eval(), (sample,), ["features"]


def _first_output(out: Any) -> Any:
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def export_onnx(version: ModelVersionInfo, out_dir: Path) -> ExportReport:
    import onnxruntime as ort
    import torch

    model, sample, names = _torch_module(version)
    path = out_dir / "model.onnx"
    axes = {n: {0: "batch"} if n == "features" else {0: "batch", 1: "sequence"} for n in names}
    with torch.inference_mode():
        expected = _first_output(model(*sample)).numpy()
    torch.onnx.export(model, sample, str(path), input_names=names, output_names=["output"],
                      dynamic_axes=axes, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: t.numpy() for n, t in zip(names, sample, strict=True)}
    got = session.run(None, feeds)[0]
    diff = float(np.abs(got - expected).max())
    # Relative to the outputs' scale: float32 rounding grows with the magnitude of logits.
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if diff > allowed:
        raise ValidationError(f"ONNX output differs from PyTorch by {diff:.2e} (> {allowed:.2e})")
    return ExportReport(str(path), "onnx", diff, int(sample[0].shape[0]))


def export_version(version: ModelVersionInfo, fmt: str, out_dir: Path) -> ExportReport:
    """Write the version to ``out_dir`` as ``safetensors`` or ``onnx``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        return export_onnx(version, out_dir)
    if fmt != "safetensors":
        raise ValidationError(f"format must be safetensors or onnx (got {fmt!r})")
    source = version.artifact_path
    files = [p for p in source.rglob("*") if p.is_file() and p.suffix != ".keras"]
    if not any(p.suffix == ".safetensors" for p in files):
        raise ValidationError(f"Version {version.id} has no safetensors weights")
    for file in files:
        target = out_dir / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    if version.framework == "pytorch":
        (out_dir / "architecture.json").write_text(json.dumps(version.architecture, indent=2))
    return ExportReport(str(out_dir), "safetensors")
