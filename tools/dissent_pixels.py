"""Pixel maps with and without dissent suppression on the bundled models, at full resolution.

    python tools/dissent_pixels.py docs/bench/dissent/pixels.png

One row per (model, target) on held-out two-object images: the image (target outlined green, the other
object dashed), then LibraGrad IxG and FullGrad without and with the pixel rule, channel-summed, red
raises the target's logit and blue lowers it, each map scaled to its own largest magnitude. Summed per
8x8 patch, the two maps of a method are equal; the pixels inside a patch are what differs.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import libragrad_fx as lf
from libragrad_fx.bench import data, models
from libragrad_fx.bench.faithfulness import targets_of
from libragrad_fx.viz import to_image


def main(argv: list[str] | None = None) -> int:
    from matplotlib.figure import Figure

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--models", default=",".join(models.names()))
    ap.add_argument("--rows", type=int, default=2, help="targets per model")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    batch = data.generate(16, seed=data.HELDOUT_SEED)
    rows = targets_of(batch.labels, batch.masks)
    pick = torch.nonzero(rows.pair).flatten()[:args.rows]
    x, t = batch.images[rows.image[pick]], rows.target[pick]
    names = args.models.split(",")
    columns = [("IxG", lf.attr.InputXGradient, None), ("IxG + DS", lf.attr.InputXGradient, "dissent"),
               ("FullGrad", lf.attr.FullGrad, None), ("FullGrad + DS", lf.attr.FullGrad, "dissent")]
    figure = Figure(figsize=(1.6 * (len(columns) + 1), 1.6 * len(names) * len(pick)), dpi=72, layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(names) * len(pick), len(columns) + 1, squeeze=False))
    for m, name in enumerate(names):
        model = models.load(name)
        graphs = {rule: lf.transform(model, x, pixel_rule=rule) for rule in (None, "dissent")}
        maps = [cls(graphs[rule]).attribute(x, target=t).sum(1) for _, cls, rule in columns]
        for i in range(len(pick)):
            row = axes[m * len(pick) + i]
            mask, other = rows.mask[pick[i]].numpy(), rows.other[pick[i]].numpy()
            row[0].imshow(to_image(x[i]), interpolation="nearest")
            row[0].set_title(f"{name}: {data.CLASSES[int(t[i])]}", fontsize=7)
            for j, ((title, _, _), heat) in enumerate(zip(columns, maps)):
                h = heat[i].detach().numpy()
                bound = float(np.abs(h).max()) or 1.0
                row[j + 1].imshow(h, cmap="bwr", vmin=-bound, vmax=bound, interpolation="nearest")
                row[j + 1].set_title(f"LibraGrad {title}", fontsize=7)
            for ax in row:
                ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=0.6)
                ax.contour(other.astype(float), levels=[0.5], colors="black", linewidths=0.6, linestyles="dashed")
                ax.set_axis_off()
    figure.savefig(args.out, format="png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
