"""Read an image file into a model input (``explain --image``)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..core.errors import UsageError

__all__ = ["load_image"]


def load_image(path: str, shape: Sequence[int], mean: Sequence[float],
               std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input [1, C, H, W] normalised with ``mean``/``std``, the picture [3, H, W] in [0, 1]).

    The shorter side is resized to fit, then the centre is cropped to (H, W) (timm's eval transform
    at crop 1.0).
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    channels, height, width = shape[-3:]
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB" if channels == 3 else "L")
    except (OSError, UnidentifiedImageError) as error:
        raise UsageError(f"cannot read image {path!r} ({type(error).__name__}: {error}); "
                         "pass a PNG or JPEG file, or --random") from error
    image = TF.resize(image, min(height, width) if height == width else [height, width],
                      interpolation=TF.InterpolationMode.BICUBIC)
    image = TF.center_crop(image, [height, width])
    picture = TF.to_tensor(image)
    x = TF.normalize(picture, list(mean)[:channels], list(std)[:channels])
    return x[None], picture
