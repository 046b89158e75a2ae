"""Maps for people: where an activation's tokens sit on the image, and how to bring maps back to it.

A vision model's intermediate values come in three layouts: tokens ``[B, N, D]`` (ViT, with
``N - h*w`` prefix tokens such as class and register tokens first; MLP-Mixer's token-mixing MLP
works on ``[B, D, N]``), channels-first ``[B, C, h, w]`` (convolutions) and channels-last
``[B, h, w, C]``. :func:`layout` recognises them from the shape, the batch size and the patch grid;
:func:`to_grid` sums a per-element map over its channels onto its own spatial grid; :func:`spread`
distributes a grid map over the image's pixels preserving its sum (so attributions stay
complete), :func:`upsample` interpolates it for display, and :func:`aggregate` sums an input-level
map over patches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Layout", "layout", "per_sample", "to_grid", "as_tokens", "spread", "upsample", "aggregate",
           "MAX_PREFIX"]

MAX_PREFIX = 16
"""At most this many non-spatial tokens (class, distillation, register tokens) precede the patches."""


@dataclass(frozen=True)
class Layout:
    kind: str
    """``tokens`` ([B, N, D] or [B, D, N]), ``nchw`` or ``nhwc``."""
    grid: tuple[int, int]
    """The spatial grid (h, w) the value's positions form."""
    dim: int = 1
    """Tokens: the token dimension (1, or 2 for a transposed [B, D, N])."""
    prefix: int = 0
    """Tokens: how many non-spatial tokens come first."""


def layout(shape: Sequence[int], batch: int, grid: tuple[int, int] | None,
           image_size: tuple[int, int] | None) -> Layout | None:
    """How a value of ``shape`` maps onto the image, or None where it does not (pooled features, logits).

    ``grid`` is the patch grid (for token sequences); ``image_size`` (H, W) decides between
    channels-first and channels-last by the aspect ratio of the spatial dimensions.
    """
    if len(shape) < 3 or shape[0] != batch:
        return None
    if len(shape) == 4 and image_size is not None:
        height, width = image_size
        if shape[2] * width == shape[3] * height:
            return Layout("nchw", (int(shape[2]), int(shape[3])))
        if shape[1] * width == shape[2] * height:
            return Layout("nhwc", (int(shape[1]), int(shape[2])))
        return None
    if len(shape) == 3 and grid is not None:
        n = grid[0] * grid[1]
        for dim in (1, 2):
            if 0 <= shape[dim] - n <= MAX_PREFIX and n > 1:
                return Layout("tokens", grid, dim, int(shape[dim]) - n)
    return None


def per_sample(values: Tensor, batch: int, dtype: torch.dtype | None = None) -> Tensor:
    """Sum a value over everything but its batch dimension (accumulating in ``dtype``): [B].

    The batch is the leading dimension, possibly folded with others sample-major (window
    attention's [B * windows, ...]); failing that, the first dimension of size B.
    """
    if values.dim() == 0:
        raise ValueError("a scalar has no batch dimension")
    if values.shape[0] % batch == 0:
        return values.reshape(batch, -1).sum(1, dtype=dtype)
    for dim, size in enumerate(values.shape):
        if size == batch:
            return values.movedim(dim, 0).reshape(batch, -1).sum(1, dtype=dtype)
    raise ValueError(f"no batch dimension of size {batch} in a value of shape {tuple(values.shape)}")


def as_tokens(values: Tensor, where: Layout) -> tuple[Tensor, Tensor | None]:
    """(spatial positions [B, h*w, C], prefix tokens [B, p, C] or None) of a value in ``where``."""
    if where.kind == "nchw":
        return values.flatten(2).transpose(1, 2), None
    if where.kind == "nhwc":
        return values.flatten(1, 2), None
    tokens = values if where.dim == 1 else values.transpose(1, 2)
    prefix = tokens[:, :where.prefix] if where.prefix else None
    return tokens[:, where.prefix:], prefix


def to_grid(values: Tensor, where: Layout) -> tuple[Tensor, Tensor]:
    """Sum a per-element map over its channels: (grid map [B, h, w], what fell on prefix tokens [B])."""
    spatial, prefix = as_tokens(values, where)
    grid_map = spatial.sum(-1).reshape(values.shape[0], *where.grid)
    rest = prefix.flatten(1).sum(1) if prefix is not None else values.new_zeros(values.shape[0])
    return grid_map, rest


def spread(grid_map: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, h, w] -> [B, H, W], each cell's value shared equally by the pixels it covers (sums kept)."""
    cells = F.interpolate(grid_map[:, None], size=size, mode="nearest")[:, 0]
    index = torch.arange(grid_map[0].numel(), device=grid_map.device, dtype=grid_map.dtype)
    owner = F.interpolate(index.reshape(1, 1, *grid_map.shape[1:]), size=size, mode="nearest").long().flatten()
    counts = torch.bincount(owner, minlength=index.numel()).to(grid_map.dtype)
    return cells / counts[owner].reshape(size)


def upsample(grid_map: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """[B, h, w] (or [h, w]) -> [B, H, W] by interpolation: for display, not for sums."""
    squeeze = grid_map.dim() == 2
    batch = grid_map[None] if squeeze else grid_map
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(batch[:, None].float(), size=size, mode=mode, **kwargs)[:, 0]
    return out[0] if squeeze else out


def aggregate(attribution: Tensor, grid: tuple[int, int]) -> Tensor:
    """An input-level map [B, C, H, W] summed over channels and over each cell of ``grid``: [B, h, w]."""
    pixels = attribution.sum(1, keepdim=True)
    height, width = pixels.shape[-2:]
    if height % grid[0] == 0 and width % grid[1] == 0:
        return F.avg_pool2d(pixels, (height // grid[0], width // grid[1]))[:, 0] * (
            (height // grid[0]) * (width // grid[1]))
    return F.adaptive_avg_pool2d(pixels, grid)[:, 0] * (height * width / (grid[0] * grid[1]))
