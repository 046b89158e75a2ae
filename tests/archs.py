"""The paper's eight architectures at test sizes (random weights, CPU, float32)."""
from __future__ import annotations

from typing import Callable

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

IMG = 32


class ClipZeroShot(nn.Module):
    """A CLIP image tower, unit-vector normalisation, and a dot product with fixed text embeddings."""

    def __init__(self, classes: int = 5, quick_gelu: bool = True) -> None:
        super().__init__()
        name = "vit_base_patch16_clip_quickgelu_224" if quick_gelu else "vit_base_patch16_clip_224"
        self.visual = timm.create_model(name, pretrained=False, img_size=IMG, patch_size=8, depth=2,
                                        embed_dim=64, num_heads=2, num_classes=32)
        text = F.normalize(torch.randn(classes, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
        self.register_buffer("text_embeddings", text)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.normalize(self.visual(x), dim=-1)
        return features @ self.text_embeddings.T * self.logit_scale.exp()


class Leftovers(nn.Module):
    """An op without a rule, a gate added to a stream, and a softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        h = h + h.softmax(-1)  # a stranded gate: not elementwise, no identity rule
        h = torch.special.bessel_j0(h)  # no rule for this op
        return h.softmax(-1)


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=5, **kwargs)


SMALL = dict(img_size=IMG, patch_size=8, depth=2, embed_dim=64, num_heads=2)
ARCHS: dict[str, Callable[[], nn.Module]] = {
    "vit": _timm("vit_small_patch16_224", **SMALL),
    "deit3": _timm("deit3_small_patch16_224", **SMALL),
    "eva02": _timm("eva02_tiny_patch14_224", img_size=28, patch_size=14, depth=2, embed_dim=64, num_heads=2),
    "beitv2": _timm("beitv2_base_patch16_224", **SMALL),
    "flexivit": _timm("flexivit_small", **SMALL),
    "siglip": _timm("vit_base_patch16_siglip_224", **SMALL),
    "clip": lambda: ClipZeroShot(),
    "mixer": lambda: timm.models.mlp_mixer.MlpMixer(num_classes=5, img_size=IMG, patch_size=8, num_blocks=2,
                                                      embed_dim=64),
}
INPUT_SIZE = {"eva02": 28}


def randomize_zeros(model: nn.Module, std: float = 0.02, below: float = 1e-4) -> nn.Module:
    """timm initialises biases, class tokens, LayerScale and some heads to zero or nearly so (1e-6:
    class tokens, DeiT3's LayerScale, Mixer's biases; 1e-5 * heads); draw them at random instead, so
    that every bias matters and no branch or gradient vanishes (almost) identically."""
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and p.abs().max() < below:
                p.normal_(0.0, std)
    return model


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The architecture ``name`` with random weights (zeros re-drawn), in eval mode, and an input batch."""
    torch.manual_seed(seed)
    model = randomize_zeros(ARCHS[name]()).eval()
    size = INPUT_SIZE.get(name, IMG)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    return model, x
