"""Saved Hugging Face model directories, as ``save_pretrained`` writes them, and sentence-transformers folders.

The task is read from the config's ``architectures``: ``*ForSequenceClassification`` (a classifier),
``*ForCausalLM`` / ``*LMHeadModel`` (a causal language model), ``*ForMaskedLM`` (a masked language model),
anything else an encoder (the bare model's last hidden states). A sentence-transformers folder
(``modules.json``) is a sentence encoder: its Transformer module is loaded as a bare encoder and its
``Pooling`` and ``Normalize`` modules are read, so the readout pools and normalises as the folder says.

Nothing is downloaded: every load is ``local_files_only`` with the hub offline, and a path that is not a
directory is a one-line :class:`~libragrad_fx.core.errors.UsageError`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import UsageError, first_line

__all__ = ["TASKS", "POOLINGS", "TextModel", "load", "task_of"]

TASKS = ("classifier", "causal-lm", "masked-lm", "encoder", "sentence-encoder")
POOLINGS = ("cls", "mean", "max", "lasttoken")
# sentence-transformers' Pooling config keys, in the order it applies them
_ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
               "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "lasttoken"}


@dataclass
class TextModel:
    """A loaded text model: the HF module, its tokenizer and how its output is read."""

    model: nn.Module
    tokenizer: Any
    task: str
    """One of :data:`TASKS`."""
    path: str = ""
    pooling: str = "mean"
    """Sentence encoders: how token states become one vector (:data:`POOLINGS`)."""
    normalize: bool = False
    """Sentence encoders: whether the pooled vector is unit-normalised (a ``Normalize`` module)."""
    labels: dict[int, str] = field(default_factory=dict)
    """Classifiers: ``id2label`` of the config."""

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings the attribution is taken at (the token lookup only: position and token
        type embeddings are added inside the model, as constants)."""
        with torch.no_grad():
            return self.model.get_input_embeddings()(input_ids).detach()


def task_of(config: Any) -> str:
    """The task of a HF config, from ``architectures`` (``encoder`` when it names none of the heads)."""
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        if name.endswith("ForSequenceClassification"):
            return "classifier"
        if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
            return "causal-lm"
        if name.endswith("ForMaskedLM"):
            return "masked-lm"
    if getattr(config, "is_encoder_decoder", False):
        raise UsageError(f"{names[0] if names else config.model_type} is an encoder-decoder model: explain its "
                         "encoder or decoder as a model of its own (text attribution reads one stack)")
    return "encoder"


def _offline() -> None:
    """Never reach the hub (a missing file is an error, not a download); no progress bars while loading."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging

    logging.disable_progress_bar()


def load(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
         attn_implementation: str | None = "eager") -> TextModel:
    """Load a saved HF model directory or a sentence-transformers folder (see the module docstring).

    Args:
        path: the directory (``config.json``, weights, tokenizer files; or ``modules.json``).
        dtype: the parameters' dtype.
        attn_implementation: HF's attention kernel (``eager``: softmax(q k^T) v written out, which every
            transformers version supports and rollout reads directly; ``sdpa`` works too; None: the default).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise UsageError(f"hf:{path} is not a local directory: pass a folder written by save_pretrained "
                         "(config.json, weights, tokenizer files); nothing is downloaded")
    _offline()
    modules = os.path.join(path, "modules.json")
    if os.path.isfile(modules):
        return _load_sentence_transformer(path, modules, dtype, attn_implementation)
    return _load_hf(path, None, dtype, attn_implementation)


def _load_hf(path: str, task: str | None, dtype: torch.dtype, attn_implementation: str | None) -> TextModel:
    import transformers

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UsageError(f"{path} has no config.json: pass a folder written by save_pretrained")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as error:
        raise UsageError(f"cannot read the config in {path} ({type(error).__name__}: {first_line(error)})") from error
    task = task or task_of(config)
    auto = {"classifier": transformers.AutoModelForSequenceClassification,
            "causal-lm": transformers.AutoModelForCausalLM,
            "masked-lm": transformers.AutoModelForMaskedLM}.get(task, transformers.AutoModel)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = auto.from_pretrained(path, **kwargs)
    except Exception as error:
        raise UsageError(f"cannot load the {task} in {path} ({type(error).__name__}: {first_line(error)})") from error
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as error:
        raise UsageError(f"cannot load a tokenizer from {path} ({type(error).__name__}: {first_line(error)}): "
                         "save the tokenizer beside the model (tokenizer.save_pretrained)") from error
    model = model.to(dtype).eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # attribution runs one full forward: no KV cache in the graph
    labels = {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}
    return TextModel(model, tokenizer, task, path, labels=labels if task == "classifier" else {})


def _load_sentence_transformer(path: str, modules_file: str, dtype: torch.dtype,
                               attn_implementation: str | None) -> TextModel:
    with open(modules_file) as f:
        modules = json.load(f)
    kinds = {m.get("type", "").rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    if "Transformer" not in kinds:
        raise UsageError(f"{modules_file} lists no Transformer module: only transformer sentence encoders are "
                         f"supported (found {', '.join(kinds) or 'nothing'})")
    unknown = set(kinds) - {"Transformer", "Pooling", "Normalize"}
    if unknown:
        raise UsageError(f"{modules_file} has modules libragrad-fx does not read ({', '.join(sorted(unknown))}): "
                         "only Transformer, Pooling and Normalize")
    loaded = _load_hf(os.path.join(path, kinds["Transformer"]), "encoder", dtype, attn_implementation)
    loaded.task, loaded.path, loaded.normalize = "sentence-encoder", path, "Normalize" in kinds
    loaded.pooling = "mean"
    if "Pooling" in kinds:
        with open(os.path.join(path, kinds["Pooling"], "config.json")) as f:
            pooling = json.load(f)
        modes = [name for key, name in _ST_POOLING.items() if pooling.get(key)]
        other = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v and k not in _ST_POOLING]
        if len(modes) != 1 or other:
            raise UsageError(f"{kinds['Pooling'] or path}: pooling {', '.join(modes + other) or 'none'} is not "
                             f"supported; one of {', '.join(_ST_POOLING)}")
        loaded.pooling = modes[0]
    return loaded
