"""The bundled text classifier: a small BERT trained on :mod:`libragrad_fx.text.data`, shipped as a Hugging
Face directory (``weights/classifier``: config, safetensors, word-level tokenizer) with a JSON card
(``weights/classifier.json``: the command that trained it, its recipe and held-out accuracy).

It is an ordinary ``save_pretrained`` folder: ``libragrad-fx explain hf:$(python -m libragrad_fx.text.model)
--text "..."`` and :func:`libragrad_fx.text.load` read it like any other.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["WEIGHTS_DIR", "NAME", "path", "card", "load", "accuracy"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NAME = "classifier"


def path() -> Path:
    """The bundled classifier's directory."""
    return WEIGHTS_DIR / NAME


def card() -> dict[str, Any]:
    """Its JSON card."""
    return json.loads((WEIGHTS_DIR / f"{NAME}.json").read_text())


def load():
    """:func:`libragrad_fx.text.load` of the bundled classifier (offline: files inside the package)."""
    from .loading import load as load_dir

    return load_dir(path())


def accuracy(model, sentences, batch: int = 256) -> float:
    """Held-out accuracy of a classifier ``TextModel`` on generated ``sentences``."""
    import torch

    correct = 0
    for i in range(0, len(sentences), batch):
        enc = model.tokenizer(sentences.texts[i:i + batch], padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        correct += int((logits.argmax(-1) == torch.tensor(sentences.labels[i:i + batch])).sum())
    return correct / len(sentences)


if __name__ == "__main__":
    print(path())
