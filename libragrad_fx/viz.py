"""Show a map on its image and save it as a PNG (matplotlib, no display needed)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .attr import maps

__all__ = ["to_image", "to_heatmap", "overlay", "draw_map", "colour_bar", "colours", "limits", "SIGNED_LEGEND",
           "WEIGHT_LEGEND"]


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


SIGNED_LEGEND = "blue: lowers the target's score · red: raises it"
"""What the colours of a signed map mean (every picture the package draws uses this convention)."""
WEIGHT_LEGEND = "weight: dark (low) to bright (high)"
"""What the colours of a non-negative map (CAMs, rollouts) mean."""


def colours(signed: bool, cmap: str | None = None) -> str:
    """The colour map: diverging ``bwr`` (blue, white at zero, red) for signed maps, ``inferno`` otherwise
    (no red-for-positive there, so red never means two things in one picture)."""
    return cmap or ("bwr" if signed else "inferno")


def limits(heat: np.ndarray, signed: bool) -> tuple[float, float]:
    """Colour limits: symmetric around zero for a signed map (white is zero), min to max otherwise."""
    if signed:
        bound = float(np.abs(heat).max()) or 1.0
        return -bound, bound
    low, high = float(heat.min()), float(heat.max())
    return low, high if high > low else low + 1.0


def grey(image: np.ndarray) -> np.ndarray:
    """An [H, W, 3] image in [0, 1] as [H, W] luminance (ITU-R BT.601 weights)."""
    return image[..., :3] @ np.array([0.299, 0.587, 0.114])


def draw_map(axes, heat: np.ndarray, *, signed: bool, image: np.ndarray | None = None, cmap: str | None = None,
             alpha: float = 0.6, interpolation: str = "bilinear"):
    """Show ``heat`` on ``axes`` (over ``image``, in grey, when given); returns a mappable for :func:`colour_bar`."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    low, high = limits(heat, signed)
    name = colours(signed, cmap)
    if image is not None:  # in grey: the image's own reds and blues must not read as the map's
        axes.imshow(grey(image), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.imshow(heat, cmap=name, alpha=alpha if image is not None else 1.0, vmin=low, vmax=high,
                interpolation=interpolation)
    axes.set_axis_off()
    return ScalarMappable(Normalize(low, high), name)  # opaque, for the colour bar


def colour_bar(figure, mappable, axes, *, signed: bool, label: str | None = None, relative: bool = False,
               **kwargs):
    """A colour bar under ``axes`` that says what the colours mean (``label``: the default legend).

    ``relative``: each map was scaled to its own largest |value|, so the ticks read -max, 0, +max."""
    bar = figure.colorbar(mappable, ax=axes, **{"orientation": "horizontal", "shrink": 0.9, "aspect": 25,
                                                 "pad": 0.02, **kwargs})
    bar.set_label(label or (SIGNED_LEGEND if signed else WEIGHT_LEGEND), fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if relative:
        low, high = mappable.norm.vmin, mappable.norm.vmax
        bar.set_ticks([low, 0.0, high] if signed else [low, high])
        bar.set_ticklabels(["-max", "0", "+max"] if signed else ["min", "max"])
    return bar


def overlay(image: Tensor | np.ndarray, attribution: Tensor | np.ndarray, path: str | os.PathLike | None = None,
            *, cmap: str | None = None, alpha: float = 0.6, title: str | None = None, signed: bool = False,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None, dpi: int = 100,
            beside: bool = True, colorbar: bool = True):
    """Draw ``attribution`` over ``image``; save a PNG at ``path`` if given. Returns the figure.

    The picture reads without a manual: the image itself beside the map (drawn over the image in grey),
    a colour bar saying what the colours mean (signed: red raises the target's score, blue lowers it)
    and ``title`` on top.

    Args:
        image: [3, H, W] or [H, W, 3].
        attribution: [H, W], [C, H, W] (channels summed) or a patch grid [h, w] (upsampled).
        cmap: the colour map (default: ``bwr`` when ``signed``, ``inferno`` otherwise).
        alpha: the map's opacity over the image.
        title: one line above the picture, e.g. the method and the target's name.
        signed: scale symmetrically around zero (white) instead of from the minimum to the maximum.
        mean, std: the input normalisation to undo for display.
        beside: show the image alone beside the overlay.
        colorbar: add the colour bar with the sign convention.
    """
    from matplotlib.figure import Figure

    picture = to_image(image, mean, std)
    heat = to_heatmap(attribution, picture.shape[:2])
    panel = max(2.4, max(picture.shape[:2]) / dpi)  # inches per panel: small images are enlarged
    columns = 2 if beside else 1
    figure = Figure(figsize=(panel * columns, panel + (0.6 if colorbar else 0) + (0.3 if title else 0)), dpi=dpi,
                    layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    if beside:
        axes[0].imshow(picture, interpolation="nearest")
        axes[0].set_axis_off()
    mappable = draw_map(axes[-1], heat, signed=signed, image=picture, cmap=cmap, alpha=alpha)
    if colorbar:
        colour_bar(figure, mappable, list(axes), signed=signed, shrink=0.6 if beside else 0.9)
    if title:
        figure.suptitle(title, fontsize=9)
    if path is not None:
        figure.savefig(os.fspath(path), format="png", dpi=dpi)
    return figure
