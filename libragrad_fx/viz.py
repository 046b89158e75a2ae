"""Show a map on its image and save it as a PNG (matplotlib, no display needed)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .attr import maps

__all__ = ["to_image", "to_heatmap", "overlay"]


def to_image(image: Tensor | np.ndarray, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> np.ndarray:
    """An image [3, H, W] or [H, W, 3] (tensor or array) as an [H, W, 3] array in [0, 1].

    ``mean``/``std`` undo the model's input normalisation; without them the image is min-max scaled.
    """
    array = image.detach().float().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image, dtype=float)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if mean is not None and std is not None:
        array = array * np.asarray(std) + np.asarray(mean)
    else:
        low, high = array.min(), array.max()
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.clip(array, 0.0, 1.0)


def to_heatmap(attribution: Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map as an [H, W] array: channels summed ([C, H, W]), a patch grid upsampled (bilinear)."""
    values = torch.as_tensor(attribution).detach().float().cpu()
    if values.dim() == 4 and values.shape[0] == 1:
        values = values[0]
    if values.dim() == 3:
        values = values.sum(0)
    if values.dim() != 2:
        raise ValueError(f"a map to overlay is [H, W], [C, H, W] or a patch grid [h, w]; got {tuple(values.shape)}")
    if tuple(values.shape) != tuple(size):
        values = maps.upsample(values, size)
    return values.numpy()


def overlay(image: Tensor | np.ndarray, attribution: Tensor | np.ndarray, path: str | os.PathLike | None = None,
            *, cmap: str = "jet", alpha: float = 0.5, title: str | None = None, signed: bool = False,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None, dpi: int = 100):
    """Draw ``attribution`` over ``image``; save a PNG at ``path`` if given. Returns the figure.

    Args:
        image: [3, H, W] or [H, W, 3].
        attribution: [H, W], [C, H, W] (channels summed) or a patch grid [h, w] (upsampled).
        cmap: the colour map; with ``signed``, a diverging one (``bwr``) centred on zero suits better.
        alpha: the map's opacity.
        signed: scale symmetrically around zero instead of from the minimum to the maximum.
        mean, std: the input normalisation to undo for display.
    """
    from matplotlib.figure import Figure

    picture = to_image(image, mean, std)
    heat = to_heatmap(attribution, picture.shape[:2])
    if signed:
        bound = float(np.abs(heat).max()) or 1.0
        low, high = -bound, bound
    else:
        low, high = float(heat.min()), float(heat.max())
        high = high if high > low else low + 1.0
    height, width = picture.shape[:2]
    figure = Figure(figsize=(max(width, 64) / dpi * 2, max(height, 64) / dpi * 2), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(picture, interpolation="nearest")
    axes.imshow(heat, cmap=cmap, alpha=alpha, vmin=low, vmax=high, interpolation="bilinear")
    axes.set_axis_off()
    if title:
        axes.text(0.01, 0.99, title, transform=axes.transAxes, va="top", ha="left", fontsize=8, color="white",
                  bbox={"facecolor": "black", "alpha": 0.5, "pad": 2})
    if path is not None:
        figure.savefig(os.fspath(path), format="png", dpi=dpi)
    return figure
