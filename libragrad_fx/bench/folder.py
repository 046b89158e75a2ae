"""The generator's images as a folder of PNG files, ImageFolder-style, with mask images beside them.

``write_image_folder(root, n, seed, masks=...)`` writes ``root/<k>_<class>/<i>.png``, the class of
the image's larger object naming its folder; the folders are numbered (``00_circle``,
``01_square``...) and all made, so their sorted order, hence the labels, are the models' class
indices. With ``masks``, it also writes ``masks/<k>_<class>/<i>.png``: 8-bit masks whose pixel value
is the object's class index + 1 (0: background), so both objects of a two-object image are told
apart. Images are drawn in chunks of ``chunk`` (chunk ``j`` from seed ``seed + j``), so memory does
not grow with ``n``. This is the test and demonstration data of ``libragrad-fx attribute`` and
``bench --data``:

    python -m libragrad_fx.bench.folder /tmp/shapes --n 3000 --masks /tmp/shapes-masks
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .data import CLASSES, HELDOUT_SEED, generate

__all__ = ["write_image_folder"]


def write_image_folder(root: str | Path, n: int, seed: int = HELDOUT_SEED, *, masks: str | Path | None = None,
                       size: int = 64, chunk: int = 256) -> list[Path]:
    """Write ``n`` generated images (and their masks); returns the image paths in sample order."""
    from PIL import Image

    root = Path(root)
    mask_root = Path(masks) if masks is not None else None
    folders = [f"{c:02d}_{name}" for c, name in enumerate(CLASSES)]
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, n, chunk):
        part = generate(min(chunk, n - start), seed=seed + start // chunk, size=size)
        pixels = (part.images.clamp(0, 1) * 255).round().to(torch.uint8)
        areas = part.masks.flatten(2).sum(2)
        for k in range(len(part)):
            i = start + k
            label = folders[int(areas[k].argmax())]
            path = root / label / f"{i:06d}.png"
            Image.fromarray(pixels[k].permute(1, 2, 0).numpy()).save(path)
            paths.append(path)
            if mask_root is not None:
                values = np.zeros((size, size), dtype=np.uint8)
                for c in part.labels[k].nonzero().flatten().tolist():
                    values[part.masks[k, c].numpy()] = c + 1
                target = mask_root / label / f"{i:06d}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(values, mode="L").save(target)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m libragrad_fx.bench.folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to write the images into")
    parser.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED, help="generator seed (default: the held-out seed)")
    parser.add_argument("--masks", help="folder for the mask images")
    args = parser.parse_args(argv)
    paths = write_image_folder(args.root, args.n, args.seed, masks=args.masks)
    print(f"wrote {len(paths)} images to {args.root}" + (f", masks to {args.masks}" if args.masks else ""))


if __name__ == "__main__":
    main()
