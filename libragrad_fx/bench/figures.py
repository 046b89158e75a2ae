"""What ``libragrad-fx bench`` writes: the CSV, the markdown table, deletion-curve plots and a grid of
example maps (matplotlib, Agg; no pyplot state)."""
from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .faithfulness import PATCH, ModelResult

__all__ = ["COLUMNS", "markdown", "plot_curves", "plot_deletion", "plot_examples", "write_csv"]

COLUMNS = ("model", "method", "variant", "key", "n_images", "n_targets", "n_pairs", "prob_srg", "prob_mif",
           "prob_lif", "pred_srg", "pred_mif", "pred_lif", "seg_ap", "seg_ap_patch", "pointing", "disc_share",
           "disc_rate", "compl_abs_mean", "compl_rel_median", "ms_per_target")

# (column, header, higher is better)
TABLE = (("prob_srg", "SRG ↑", True), ("prob_mif", "MIF ↓", False), ("prob_lif", "LIF ↑", True),
         ("pred_srg", "SRG acc ↑", True), ("seg_ap", "AP ↑", True), ("seg_ap_patch", "AP patch ↑", True),
         ("pointing", "Point ↑", True),
         ("disc_share", "Disc ↑", True), ("compl_rel_median", "Compl. err ↓", False))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _cell(value: float, column: str, best: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.1e}" if column == "compl_rel_median" else f"{value:.3f}"
    return f"**{text}**" if best else text


def markdown(results: Sequence[ModelResult]) -> str:
    """One table per model; the best value of each column in bold."""
    out = []
    for result in results:
        rows = result.rows
        out.append(f"### {result.model}\n")
        out.append("| method | backward | " + " | ".join(h for _, h, _ in TABLE) + " |")
        out.append("|---|---|" + "---:|" * len(TABLE))
        best = {}
        for column, _, higher in TABLE:
            values = [r[column] for r in rows if not math.isnan(r[column])]
            if column == "compl_rel_median":
                values = [abs(v) for v in values]
            best[column] = (max(values) if higher else min(values)) if values else None
        for r in rows:
            cells = [_cell(r[c], c, best[c] is not None and r[c] == best[c]) for c, _, _ in TABLE]
            variant = "—" if r["variant"] == "baseline" else r["variant"]
            out.append(f"| {r['method']} | {variant} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _style(name: str) -> dict[str, Any]:
    variant, _, label = name.rpartition(":")
    preset, _, pixel = variant.partition("+")
    colours = {"Gradient": "C0", "IxG": "C1", "IG": "C2", "SmoothGrad": "C3", "FullGrad": "C4", "GradCAM": "C5",
               "HiResCAM": "C6", "Rollout": "C7", "GAE": "C8", "AttnLRP": "C9"}
    # a pixel rule: dash-dot under LibraGrad, dash-dot-dot under vanilla
    line = {"libragrad": "-.", "vanilla": (0, (4, 1, 1, 1, 1, 1))}[preset] if pixel else \
        {"libragrad": "-", "vanilla": "--", "": ":"}[preset]
    return {"color": colours.get(label, "k"), "linestyle": line, "linewidth": 1.6 if preset == "libragrad" else 1.0}


def short_name(name: str) -> str:
    """A row's name in a figure's narrow column: ``LG+DS IxG``, ``van IxG``."""
    variant, _, label = name.rpartition(":")
    preset, _, pixel = variant.partition("+")
    preset = {"libragrad": "LG", "vanilla": "van"}.get(preset, preset)
    return f"{preset}{'+DS' if pixel == 'dissent' else '+' + pixel if pixel else ''} {label}" if variant else label


def plot_deletion(result: ModelResult, path: Path, dpi: int = 80) -> None:
    """Mean target probability as patches are removed, MIF and LIF side by side."""
    plot_curves(result.curves, path, title=result.model, xlabel=f"fraction of patches removed ({result.baseline} baseline)",
                ylabel=result.readout, dpi=dpi)


def plot_curves(curves: dict[str, dict[str, list[float]]], path: Path, *, title: str, xlabel: str, ylabel: str,
                dpi: int = 80) -> None:
    """Deletion curves ``{method: {"fractions", "mif", "lif"}}``, MIF and LIF side by side."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=dpi, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for name, curve in curves.items():
        for ax, key in zip(axes, ("mif", "lif")):
            ax.plot(curve["fractions"], curve[key], label=name, **_style(name))
    for ax, order in zip(axes, ("most influential first (MIF, lower is better)",
                                "least influential first (LIF, higher is better)")):
        ax.set_title(f"{title}: {order}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[1].legend(fontsize=6, ncol=2, loc="lower left")
    figure.savefig(path, format="png", dpi=dpi)


def _blocks(heat: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A map shown as the patch scores the deletion ranks by: pixel maps summed per patch, every
    patch drawn as a flat square."""
    from libragrad_fx.metrics import patch_scores

    gh, gw = size[0] // PATCH, size[1] // PATCH
    cells = patch_scores(heat[None], size, PATCH).reshape(gh, gw)
    return cells.repeat_interleave(PATCH, 0).repeat_interleave(PATCH, 1).numpy()


def plot_examples(result: ModelResult, path: Path, classes: Sequence[str], dpi: int = 70) -> None:
    """Rows: two-object images, once per object as the target; columns: the image (target object
    outlined green, the other dashed black), then each map as patch scores (pixel maps summed per 8x8
    patch): signed maps in blue (lowers the target's score) and red (raises it), non-negative ones
    dark to bright, each scaled to its own largest value."""
    from matplotlib.figure import Figure

    from libragrad_fx.viz import to_image

    ex = result.examples
    names = list(ex.get("maps", {}))
    k = len(ex.get("targets", []))
    if not k or not names:
        return
    figure = Figure(figsize=(1.3 * (len(names) + 1), 1.4 * k), dpi=dpi, layout="constrained")
    axes = np.atleast_2d(figure.subplots(k, len(names) + 1, squeeze=False))
    for i in range(k):
        image = to_image(ex["images"][i])
        axes[i, 0].imshow(image, interpolation="nearest")
        axes[i, 0].contour(ex["masks"][i].numpy().astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        axes[i, 0].contour(ex["others"][i].numpy().astype(float), levels=[0.5], colors="black", linewidths=0.8,
                           linestyles="dashed")
        axes[i, 0].set_title(f"target {classes[int(ex['targets'][i])]}", fontsize=6)
        for j, name in enumerate(names):
            heat = _blocks(ex["maps"][name][i], image.shape[:2])
            bound = float(np.abs(heat).max()) or 1.0
            signed = bool((heat < 0).any())
            ax = axes[i, j + 1]
            ax.imshow(heat, cmap="bwr" if signed else "inferno", vmin=-bound if signed else 0, vmax=bound,
                      interpolation="nearest")
            ax.contour(ex["masks"][i].numpy().astype(float), levels=[0.5], colors="lime", linewidths=0.5)
            if i == 0:
                ax.set_title(short_name(name), fontsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    legend = (f"{result.model}: target outlined green, other object dashed; signed maps blue = lowers the "
              "target's score, red = raises it; rollout / GAE / CAM maps dark = low, bright = high")
    figure.suptitle("\n".join(textwrap.wrap(legend, int(figure.get_figwidth() * 22))), fontsize=6)
    figure.savefig(path, format="png", dpi=dpi)

