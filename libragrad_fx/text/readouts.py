"""Readouts: what a text attribution explains, as small modules over ``inputs_embeds``.

Each wraps the HF model and maps ``(inputs_embeds [B, T, H], attention_mask [B, T] or None)`` to scores
``[B, K]``; the attribution targets one of the K (a class, a vocabulary entry, or the only one). The
whole readout is what :func:`libragrad_fx.transform` captures, so pooling, normalisation and
log-softmax are part of the rewritten graph and get its rules like the model's own ops:

* :class:`ClassLogits`: a classifier's logits [B, classes];
* :class:`NextTokenLogits`: a causal LM's logits for the token after the last position [B, vocab];
* :class:`ContinuationLogProb`: the summed log-probability of a fixed continuation [B, 1] (the text
  holds prompt and continuation; the continuation's tokens are read from the positions before them);
* :class:`MaskedLogits`: a masked LM's logits at one position [B, vocab];
* :class:`Similarity`: the cosine similarity of a sentence embedding (pooled as the model says,
  unit-normalised) with a fixed unit vector, the pair's embedding [B, 1];
* :class:`Embedding`: the (pooled, normalised) sentence embedding itself [B, hidden].

The integer attention mask is a constant to the transform (a discrete input carries no gradient).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ClassLogits", "NextTokenLogits", "ContinuationLogProb", "MaskedLogits", "Embedding", "Similarity",
           "pool"]


class _Readout(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def run(self, inputs_embeds: Tensor, attention_mask: Tensor | None):
        kwargs = {"inputs_embeds": inputs_embeds}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if _takes(self.model, "use_cache"):
            kwargs["use_cache"] = False  # one full forward: no KV cache in the graph
        return self.model(**kwargs)


def _takes(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` names the argument (transformers 4.x models reject unknown keywords)."""
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class ClassLogits(_Readout):
    """A sequence classifier's logits [B, classes]."""

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.run(inputs_embeds, attention_mask).logits


class NextTokenLogits(_Readout):
    """A causal LM's next-token logits after position ``position`` (default the last) [B, vocab]."""

    def __init__(self, model: nn.Module, position: int = -1) -> None:
        super().__init__(model)
        self.position = position

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.run(inputs_embeds, attention_mask).logits[:, self.position]


class ContinuationLogProb(_Readout):
    """sum_i log p(c_i | prompt, c_<i): the summed log-probability of the last ``len(ids)`` tokens [B, 1].

    The log-softmax is the graph's head (kept as is: its gradient is the plain one, e_c - p). The token
    shares and the biases then add up to sum_i (z_{i,c_i} - <p_i, z_i>), the continuation's logits
    against their expectation under the model; the rest of log p is minus the entropies of the
    predicted distributions, :meth:`entropy`, which the attribution reports as a named term.
    """

    def __init__(self, model: nn.Module, ids: list[int]) -> None:
        super().__init__(model)
        if not ids:
            raise ValueError("the continuation has no tokens")
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)

    def _logits(self, inputs_embeds: Tensor, attention_mask: Tensor | None) -> Tensor:
        n = self.ids.shape[0]
        if inputs_embeds.shape[1] <= n:
            raise ValueError(f"the text has {inputs_embeds.shape[1]} tokens: no prompt before the {n} of the "
                             "continuation")
        logits = self.run(inputs_embeds, attention_mask).logits
        return logits[:, -n - 1:-1]  # position t predicts token t + 1

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        logp = self._logits(inputs_embeds, attention_mask).log_softmax(-1)
        index = self.ids[None, :, None].expand(logp.shape[0], -1, 1)
        return logp.gather(-1, index)[..., 0].sum(-1, keepdim=True)

    @torch.no_grad()
    def entropy(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """sum_i H(p_i) per sample [B] (float64): log p(c) = sum_i (z_{i,c_i} - <p_i, z_i>) - this."""
        logp = self._logits(inputs_embeds, attention_mask).double().log_softmax(-1)
        return -(logp.exp() * logp).sum(-1).sum(-1)


class MaskedLogits(_Readout):
    """A masked LM's logits at position ``position`` (where the mask token is) [B, vocab]."""

    def __init__(self, model: nn.Module, position: int) -> None:
        super().__init__(model)
        self.position = position

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.run(inputs_embeds, attention_mask).logits[:, self.position]


def pool(hidden: Tensor, attention_mask: Tensor | None, mode: str) -> Tensor:
    """Token states [B, T, H] -> one vector per sample [B, H], as sentence-transformers pools them."""
    if mode == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        if mode == "mean":
            return hidden.mean(1)
        if mode == "max":
            return hidden.amax(1)
        if mode == "lasttoken":
            return hidden[:, -1]
    else:
        weights = attention_mask[..., None].to(hidden.dtype)
        if mode == "mean":
            return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        if mode == "max":
            return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(1)
        if mode == "lasttoken":  # right padding: the last real token of each row
            last = attention_mask.long().sum(1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {mode!r}; valid: cls, mean, max, lasttoken")


class Embedding(_Readout):
    """The sentence embedding [B, hidden]: last hidden states pooled (``pooling``), unit-normalised if
    ``normalize``."""

    def __init__(self, model: nn.Module, pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__(model)
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        hidden = self.run(inputs_embeds, attention_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class Similarity(Embedding):
    """cos(embedding(text), other) [B, 1], ``other`` a fixed vector (the pair's embedding, no gradient).

    Written as <normalize(e), other / |other|>: the unit normalisation is an op the transform
    rewrites (its norm detached), so the similarity is linear in the embedding under the rules.
    """

    def __init__(self, model: nn.Module, other: Tensor, pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__(model, pooling, normalize)
        self.register_buffer("other", F.normalize(other.detach().reshape(-1).float(), dim=0), persistent=False)

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        embedding = super().forward(inputs_embeds, attention_mask)
        unit = F.normalize(embedding, dim=-1)
        return (unit * self.other.to(unit.dtype)).sum(-1, keepdim=True)
