"""``libragrad-fx demo``: the paper's co-occurring-objects picture on a fresh install.

One generated image with two objects of different classes; the bundled ViT (``--model``: another bundled
model) explains each class with Input x Gradient and FullGrad, on the vanilla and on the LibraGrad backward.
For every map it reports

* the completeness error |sum of the attribution - f_t(x)| (FullGrad with its bias terms; Input x
  Gradient alone leaves the biases' share out, so only FullGrad can be complete on a model with biases);
* the class discrimination: the share of the map's positive mass per pixel that falls on the target's
  object rather than on the other object (:func:`libragrad_fx.metrics.class_discrimination`).

Needs only the package (no lxt, no download).
"""
from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from libragrad_fx import metrics

__all__ = ["DemoResult", "run"]

METHODS = (("input_x_gradient", "IxG"), ("fullgrad", "FullGrad"))
PRESETS = ("vanilla", "libragrad")
IXG_REASON_ABOVE = 1e-3
"""A relative IxG completeness error above this is the biases' share, not rounding: the text says why."""


@dataclass
class DemoResult:
    """What the demo measured and where it wrote the picture."""

    path: str
    classes: tuple[str, str]
    model: str
    rows: list[dict] = field(default_factory=list)
    """Per (target class, method, backward): logit, attributed, abs_error, rel_error, share, more_on_target."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    folded_stem: bool = False
    """The model's card says its input standardisation is folded into the stem (a large bias)."""

    def text(self) -> str:
        header = ("target", "method", "backward", "logit", "map sum", "abs. error", "rel. error", "on target")
        cells = [(r["target"], r["method"], r["backward"], f"{r['logit']:.3f}", f"{r['attributed']:.3f}",
                  f"{r['abs_error']:.2e}", f"{r['rel_error']:.1e}", f"{r['share']:.2f}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

        def line(row: tuple[str, ...]) -> str:  # words left, numbers right, every column under its label
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        lines = [f"two objects: {self.classes[0]} and {self.classes[1]} (bundled model {self.model!r})", line(header)]
        lines += [line(row) for row in cells]
        notes = ["map sum: what the map adds up to (FullGrad: with its bias terms); abs./rel. error: |map sum - "
                 "logit| and that over |logit| (0: complete); on target: share of the map's positive mass per "
                 "pixel on the target's object vs the other object (0.5 = no discrimination)", *self._ixg_reason()]
        lines += [wrapped for note in notes for wrapped in textwrap.wrap(note, 110, subsequent_indent="  ")]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"wrote {self.path} ({self.seconds:.1f} s)")
        return "\n".join(lines)


    def _ixg_reason(self) -> list[str]:
        """Why Input x Gradient misses the logit, with this image's numbers (when it misses by more than rounding)."""
        row = {(r["target"], r["method"], r["backward"]): r for r in self.rows}
        missed = [r for r in self.rows if r["method"] == "IxG" and r["rel_error"] > IXG_REASON_ABOVE]
        if not missed:
            return []
        shares = [f"{t}: logit {row[(t, 'IxG', 'libragrad')]['logit']:.3f} = IxG {row[(t, 'IxG', 'libragrad')]['attributed']:.3f}"
                  f" + biases {row[(t, 'FullGrad', 'libragrad')]['attributed'] - row[(t, 'IxG', 'libragrad')]['attributed']:.3f}"
                  for t in self.classes]
        why = (" (here the stem's bias is large: it holds the input standardisation folded in after training)"
               if self.folded_stem else "")
        return [f"why IxG misses the logit: Input x Gradient leaves the biases' share out{why}; FullGrad is IxG plus "
                f"that share, complete under LibraGrad ({'; '.join(shares)})"]


def _pick(model, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(image [1,3,H,W], its two classes [2], their masks [2,H,W], the lower of their two logits): of 32
    two-object images, the one whose two classes the model recognises best (the highest lower logit)."""
    from .data import generate

    batch = generate(32, seed=seed, two_objects=True)
    classes = torch.stack([row.nonzero().flatten() for row in batch.labels])
    with torch.no_grad():
        both = model(batch.images).gather(1, classes)
    i = int(both.min(1).values.argmax())
    return batch.images[i:i + 1], classes[i], batch.masks[i, classes[i]], float(both[i].min())


def run(out: str | os.PathLike = "libragrad_demo.png", seed: int | None = None, model_name: str = "eva02",
        progress: Callable[[int, int], None] | None = None) -> DemoResult:
    """Explain both objects of one two-object image, vanilla beside LibraGrad; write the PNG grid.

    ``progress(done, total)`` is called as the work advances (a progress display's hook)."""
    from libragrad_fx import attr, transform

    from . import models
    from .data import CLASSES, HELDOUT_SEED

    start = time.perf_counter()
    total, done = 2 + len(PRESETS) * (1 + len(METHODS)), 0

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    model = models.load(model_name)
    image, classes, masks, lower = _pick(model, HELDOUT_SEED if seed is None else seed)
    advance()
    names = (CLASSES[int(classes[0])], CLASSES[int(classes[1])])
    result = DemoResult(os.fspath(out), names, model_name,
                        folded_stem=bool(models.card(model_name).get("normalize")))
    if lower <= 0:
        result.notes.append(f"{model_name} predicts both classes on none of the 32 images drawn (see its model card's "
                            "held-out accuracy); this is the pair it scores highest, one class below 0")
    x = image.expand(2, -1, -1, -1).contiguous()  # one row per target class
    panels = {}
    for preset in PRESETS:
        gm = transform(model, x, preset=preset)
        with torch.no_grad():
            logits = gm(x).gather(1, classes[:, None])[:, 0]
        advance()
        for key, label in METHODS:
            if key == "fullgrad":
                heat, parts = attr.FullGrad(gm).attribute_with_totals(x, target=classes)
                heat, total = heat.sum(1), parts.attributed
            else:
                m = attr.InputXGradient(gm).attribute(x, target=classes)
                heat, total = m.sum(1), m.flatten(1).sum(1, dtype=torch.float64)
            err, rel = metrics.completeness_error(total, logits)
            disc = metrics.class_discrimination(heat, masks, masks.flip(0), per_area=True)
            panels[(preset, label)] = heat
            for i in range(2):
                result.rows.append({"target": names[i], "method": label, "backward": preset,
                                    "logit": float(logits[i]), "attributed": float(total[i]),
                                    "abs_error": float(err[i]), "rel_error": float(rel[i]),
                                    "share": float(disc["share"][i]), "more_on_target": bool(disc["more_on_a"][i])})
            advance()
    _draw(image[0], masks, names, panels, result, out)
    advance()
    result.seconds = time.perf_counter() - start
    return result


TARGET_OUTLINE = {"colors": "lime", "linewidths": 1.0}
OTHER_OUTLINE = {"colors": "black", "linewidths": 1.0, "linestyles": "dashed"}
"""Object outlines: green the object explained, dashed black the other one (red and blue are the map's)."""


def _draw(image: torch.Tensor, masks: torch.Tensor, names: tuple[str, str], panels: dict, result: DemoResult,
          out: str | os.PathLike) -> None:
    """Rows: the two objects as the target; columns: the image, then each (backward, method) map, every map
    scaled to its own largest |value| under one colour bar that says what red and blue mean."""
    from matplotlib.figure import Figure

    from libragrad_fx.viz import colour_bar, draw_map, to_image

    picture = to_image(image)
    keys = list(panels)
    figure = Figure(figsize=(2.2 * (len(keys) + 1), 5.6), dpi=90, layout="constrained")
    axes = figure.subplots(2, len(keys) + 1, squeeze=False)
    rows = {(r["target"], r["backward"], r["method"]): r for r in result.rows}

    def outline(ax, i: int) -> None:
        ax.contour(masks[i].numpy().astype(float), levels=[0.5], **TARGET_OUTLINE)
        ax.contour(masks[1 - i].numpy().astype(float), levels=[0.5], **OTHER_OUTLINE)

    mappable = None
    for i in range(2):
        axes[i, 0].imshow(picture, interpolation="nearest")
        outline(axes[i, 0], i)
        axes[i, 0].set_title(f"explain '{names[i]}' (green)\nother object: dashed", fontsize=8)
        for j, (preset, label) in enumerate(keys):
            ax = axes[i, j + 1]
            mappable = draw_map(ax, panels[(preset, label)][i].detach().numpy(), signed=True, interpolation="nearest")
            outline(ax, i)
            r = rows[(names[i], preset, label)]
            ax.set_title(f"{preset} {label}\non target {r['share']:.2f}, compl. err {r['rel_error']:.0e}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    colour_bar(figure, mappable, axes[:, 1:].ravel().tolist(), signed=True, relative=True, shrink=0.5,
               label="blue: lowers the target's score · red: raises it (each map scaled to its own largest |value|)")
    figure.suptitle(f"Input x Gradient and FullGrad on the bundled {result.model}: vanilla vs LibraGrad backward, "
                    "each object explained", fontsize=10)
    figure.savefig(os.fspath(out), format="png")
