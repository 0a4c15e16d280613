"""A Hugging Face transformers encoder with a sequence-classification head, fine-tuned like
any zoo model: rows are token ids and attention masks stacked as ``(batch, 2, max_length)``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


def resolve_model_folder(path: str) -> Path:
    """The local folder of ``path``: a folder, ``package:<module>`` (a model folder shipped in
    an installed Python package, found with its ``get_model_path()``), or a hub repo id taken
    from the Hugging Face cache.

    Raises:
        FileNotFoundError: with what was tried.
    """
    if path.startswith("package:"):
        module = importlib.import_module(path.removeprefix("package:"))
        folder = Path(module.get_model_path())
    elif Path(path).expanduser().is_dir():
        folder = Path(path).expanduser()
    else:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(repo_id=path, local_files_only=True))
        except Exception as exc:  # not cached, bad repo id
            raise FileNotFoundError(
                f"{path!r} is neither a folder, package:<module>, nor a cached hub repo"
            ) from exc
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json: not a transformers model folder")
    return folder


@dataclass
class HFClassifierConfig:
    path: str
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    max_length: int = 64
    freeze_encoder: bool = False


class HFClassifier(nn.Module):
    """``AutoModelForSequenceClassification`` from a model folder, called on stacked ids."""

    def __init__(self, config: HFClassifierConfig) -> None:
        super().__init__()
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # "newly initialized head" is the point here
        names = config.class_names or [str(i) for i in range(config.num_classes)]
        self.config = config
        self.inner = AutoModelForSequenceClassification.from_pretrained(
            str(resolve_model_folder(config.path)),
            num_labels=config.num_classes,
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
        )
        if config.freeze_encoder:
            base = getattr(self.inner, self.inner.base_model_prefix)
            for parameter in base.parameters():
                parameter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0].long(), x[:, 1].long()
        return self.inner(input_ids=ids, attention_mask=mask).logits  # type: ignore[no-any-return]


def tokenize(path: str, texts: list[str], max_length: int) -> torch.Tensor:
    """Texts as ``(n, 2, max_length)`` int64: token ids and attention masks."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_folder(path)))
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return torch.stack([encoded["input_ids"], encoded["attention_mask"]], dim=1)


def save_pretrained(model: HFClassifier, folder: Path) -> None:
    """The fine-tuned model as a complete transformers folder (safetensors, config with the
    class names, tokenizer), loadable with ``from_pretrained`` and servable as is."""
    from transformers import AutoTokenizer

    model.inner.save_pretrained(str(folder), safe_serialization=True)
    source = resolve_model_folder(model.config.path)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(folder))
