"""A small CLIP: a timm ViT image tower and a word-level transformer text tower, trained contrastively
(``tools/train_clip.py``) on the generator's images and their captions (:mod:`libragrad_fx.bench.captions`).

``ClipModel.encode_image(images)`` takes the generator's images as they come ((n, 3, 64, 64) in [0, 1])
and ``encode_text(prompts)`` a list of strings over the card's vocabulary; both return the projected
embeddings, not normalised (CLIP's convention: the similarity is the cosine of the two, and
``forward`` returns the logits ``scale * cos``). The image tower is a stock timm ``VisionTransformer``
whose head is the projection, so the explanation tools see an ordinary timm model.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClipModel", "TextTower", "build"]

PAD = "<pad>"


class TextTower(nn.Module):
    """Word embeddings and learned positions, pre-norm transformer blocks (timm's), a final LayerNorm, the
    mean over the prompt's words and a linear projection."""

    def __init__(self, vocab_size: int, context: int, width: int, depth: int, heads: int, embed_dim: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(1, context, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (n, L) int64 (0 is padding) -> (n, embed_dim)."""
        valid = tokens != 0
        x = self.token_embed(tokens) + self.pos_embed[:, :tokens.shape[1]]
        mask = valid[:, None, None, :]  # attend to words only
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = self.norm(x)
        pooled = (x * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        return self.proj(pooled)


class ClipModel(nn.Module):
    """Image and text towers with a learned temperature.

    Args:
        visual: the image tower, images -> (n, embed_dim).
        text: the text tower, token ids -> (n, embed_dim).
        vocab: the words, in token-id order after the padding token.
        context: the longest prompt, in words.
    """

    def __init__(self, visual: nn.Module, text: TextTower, vocab: Sequence[str], context: int) -> None:
        super().__init__()
        self.visual = visual
        self.text = text
        self.vocab = tuple(vocab)
        self.context = context
        self._ids = {w: i + 1 for i, w in enumerate(self.vocab)}
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1 / 0.07)))))

    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        """Token ids (n, context), 0-padded; lower case, punctuation ignored.

        Raises ``ValueError`` for an empty prompt, a word outside the vocabulary or a prompt longer
        than the context, naming it.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string")
        if not prompts:
            raise ValueError("no prompts given")
        rows = []
        for text in prompts:
            if not isinstance(text, str):
                raise TypeError(f"a prompt must be a string, got {type(text).__name__}")
            words = re.findall(r"[a-z]+", text.lower())
            if not words:
                raise ValueError(f"prompt {text!r} has no words; write e.g. 'a star' or 'a red shape on the left'")
            unknown = [w for w in words if w not in self._ids]
            if unknown:
                raise ValueError(f"prompt {text!r}: unknown word {unknown[0]!r}; the model knows: "
                                 f"{', '.join(self.vocab)}")
            if len(words) > self.context:
                raise ValueError(f"prompt {text!r} has {len(words)} words; at most {self.context}")
            rows.append([self._ids[w] for w in words] + [0] * (self.context - len(words)))
        return torch.tensor(rows, dtype=torch.int64)

    def encode_image(self, images: Tensor) -> Tensor:
        """(n, 3, 64, 64) images in [0, 1] -> (n, embed_dim), not normalised."""
        return self.visual(images)

    def encode_text(self, prompts: Sequence[str] | Tensor) -> Tensor:
        """A list of prompts (or token ids) -> (n, embed_dim), not normalised."""
        tokens = prompts if isinstance(prompts, Tensor) else self.tokenize(prompts)
        return self.text(tokens.to(self.logit_scale.device))

    def similarity(self, images: Tensor, prompts: Sequence[str] | Tensor) -> Tensor:
        """Cosine similarity of every image with every prompt, (n_images, n_prompts)."""
        return F.normalize(self.encode_image(images), dim=-1) @ F.normalize(self.encode_text(prompts), dim=-1).T

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        """Logits ``scale * cos`` (n_images, n_texts), the contrastive loss's input."""
        return self.logit_scale.exp().clamp(max=100) * self.similarity(images, tokens)


def build(card: dict[str, Any]) -> ClipModel:
    """A ClipModel at random init from a card's ``visual`` (timm class and kwargs) and ``text`` settings."""
    from .models import build as build_timm

    visual = build_timm(card["visual"]["timm_class"], card["visual"]["kwargs"])
    t = card["text"]
    text = TextTower(len(t["vocab"]) + 1, t["context"], t["width"], t["depth"], t["heads"], t["embed_dim"])
    return ClipModel(visual, text, t["vocab"], t["context"])
