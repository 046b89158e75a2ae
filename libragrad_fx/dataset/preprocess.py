"""How an image file becomes the model's input: the model's own evaluation transform.

* a timm model: timm's data config (``timm.data.resolve_data_config``: interpolation, crop
  percentage and mode, mean, std), its input size as the model was built (``img_size`` in
  ``--model-kwargs`` counts), and timm's evaluation transform itself;
* a bundled model: its card (the generator's image size, no normalisation, no crop);
* anything else (a factory, a ``.pt2`` program): the shorter side resized (bicubic) and the centre
  cropped to the model's input size, normalised with the mean and std it carries (ImageNet's by
  default), as ``explain --image`` does;

and ``--input-size`` replaces the size wherever it is given. The geometry (resize, crop) is applied
to an object mask with nearest-neighbour interpolation, so a mask stays aligned with its image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.errors import UsageError

__all__ = ["Preprocess", "from_model", "decode_mask"]


@dataclass(frozen=True)
class Preprocess:
    """A model's evaluation transform, as settings (picklable; DataLoader workers build their own)."""

    size: tuple[int, int]
    """(H, W) of the model input."""
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: str = "center"
    origin: str = "default"
    """Where the settings come from: ``timm``, ``card``, ``model`` (mean/std only) or ``default``."""

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def _geometry(self, interpolation: str):
        from timm.data import create_transform

        # timm's eval transform, stopped before it scales and normalises (normalize=False keeps the
        # pixel values as they are): the same geometry for images and for masks
        return create_transform(input_size=(self.channels, *self.size), interpolation=interpolation,
                                crop_pct=self.crop_pct, crop_mode=self.crop_mode, mean=self.mean, std=self.std,
                                is_training=False, normalize=False)

    def picture(self, file: str) -> Tensor:
        """The image at ``file``, resized and cropped: [C, H, W] float32 in [0, 1]."""
        from PIL import Image

        if not hasattr(self, "_image_tf"):
            object.__setattr__(self, "_image_tf", self._geometry(self.interpolation))
        with Image.open(file) as opened:
            image = opened.convert("RGB" if self.channels == 3 else "L")
        pixels = self._image_tf(image)
        return pixels.to(torch.float32).div(255)

    def normalize(self, picture: Tensor) -> Tensor:
        """``(picture - mean) / std`` per channel: the model input."""
        from torchvision.transforms import functional as TF

        return TF.normalize(picture, list(self.mean)[:self.channels], list(self.std)[:self.channels])

    def mask(self, file: str) -> Tensor:
        """The mask image at ``file`` with the image's geometry (nearest): [H, W] int64 values
        (see :func:`decode_mask`)."""
        from PIL import Image

        if not hasattr(self, "_mask_tf"):
            object.__setattr__(self, "_mask_tf", self._geometry("nearest"))
        with Image.open(file) as opened:
            values = decode_mask(opened)
        return self._mask_tf(Image.fromarray(values.numpy().astype("int32"), mode="I")).to(torch.int64)[0]


def decode_mask(image) -> Tensor:
    """A mask image as integer values [H, W]: a palette or grey image's values as they are; an RGB one
    as R + 256 G (ImageNet-S's encoding of its class ids)."""
    import numpy as np

    if image.mode in ("RGB", "RGBA"):
        array = np.asarray(image.convert("RGB")).astype(np.int64)
        return torch.from_numpy(array[..., 0] + 256 * array[..., 1])
    if image.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
        image = image.convert("L")
    return torch.from_numpy(np.asarray(image).astype(np.int64))


def from_model(loaded, input_size: tuple[int, int] | None = None) -> Preprocess:
    """The evaluation transform of ``loaded`` (a :class:`libragrad_fx.cli.specs.LoadedModel`)."""
    shape = loaded.input_shape
    size = tuple(input_size) if input_size is not None else (tuple(shape[-2:]) if shape and len(shape) == 4 else None)
    if size is None:
        raise UsageError(f"cannot tell the image size {loaded.label} takes: pass --input-size H,W (e.g. 224,224)")
    channels = int(shape[1]) if shape and len(shape) == 4 else 3
    if channels not in (1, 3):
        raise UsageError(f"{loaded.label} takes {channels}-channel inputs: images are read as RGB (3) or grey (1)")
    cfg = dict(getattr(loaded.model, "pretrained_cfg", None) or {}) if loaded.kind in ("timm", "factory") else {}
    if cfg:
        from timm.data import resolve_data_config

        data = resolve_data_config(model=loaded.model)
        return Preprocess(size, channels, tuple(data["mean"]), tuple(data["std"]), data["interpolation"],
                          float(data["crop_pct"]), data.get("crop_mode") or "center", "timm")
    origin = "card" if loaded.kind == "bundled" else "model"
    return Preprocess(size, channels, tuple(loaded.mean), tuple(loaded.std), origin=origin)
