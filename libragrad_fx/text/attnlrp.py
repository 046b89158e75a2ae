"""AttnLRP (Achtibat et al., ICML 2024) on a saved HF BERT classifier, with lxt's own rules for BERT.

lxt ships a rule map for Hugging Face BERT (``lxt.efficient.monkey_patch(modeling_bert)``: LayerNorm's std
detached, GELU by the identity rule, attention by its uniform rule, the pooler's tanh by the identity rule)
and needs transformers 4.x, so it runs here as a script under a Python that has lxt (``python=`` or
``$LIBRAGRAD_FX_LXT_PYTHON``; see :mod:`libragrad_fx.bench.attnlrp`), exchanging token ids and results
through a temporary file. Its relevance is Input x Gradient at the input embeddings under those rules,
summed over the hidden dimension: one score per token. As a script this file imports torch,
transformers and lxt only.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["LXTUnavailable", "relevance"]


class LXTUnavailable(RuntimeError):
    """No Python with lxt."""


def relevance(model_dir: str, ids: Tensor, mask: Tensor, target: Tensor, python: str | None = None,
              batch: int = 64) -> tuple[Tensor, Tensor, Tensor, str]:
    """(token relevance [N, T], its sum per sentence [N] (float64), the target logit lxt's forward computed [N],
    the Python used) for ``target`` [N]."""
    from ..bench.attnlrp import LXTUnavailable as Missing
    from ..bench.attnlrp import find_python

    try:
        chosen = find_python(python)
    except Missing as error:
        raise LXTUnavailable(str(error)) from error
    with tempfile.TemporaryDirectory(prefix="libragrad-lxt-text-") as tmp:
        inp, out = os.path.join(tmp, "in.pt"), os.path.join(tmp, "out.pt")
        torch.save({"dir": str(model_dir), "ids": ids, "mask": mask, "target": target, "batch": batch}, inp)
        done = subprocess.run([chosen, "-I", str(Path(__file__).resolve()), inp, out], check=False,
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"the lxt worker ({chosen}) failed: {last}")
        result = torch.load(out, weights_only=True)
    return result["relevance"].double(), result["relevance"].double().sum(1), result["logit"], chosen


def _worker(inp: str, out: str) -> None:
    from lxt.efficient import monkey_patch
    from transformers.models.bert import modeling_bert

    torch.set_num_threads(1)
    job = torch.load(inp, weights_only=True)
    monkey_patch(modeling_bert, verbose=False)
    model = modeling_bert.BertForSequenceClassification.from_pretrained(
        job["dir"], local_files_only=True, attn_implementation="eager").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    parts, values = [], []
    for i in range(0, job["ids"].shape[0], job["batch"]):
        ids, mask = job["ids"][i:i + job["batch"]], job["mask"][i:i + job["batch"]]
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        value = logits.gather(1, job["target"][i:i + job["batch"], None])[:, 0]
        (grad,) = torch.autograd.grad(value.sum(), embeds)
        parts.append((embeds * grad).sum(-1).detach())
        values.append(value.detach())
    torch.save({"relevance": torch.cat(parts), "logit": torch.cat(values)}, out)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
