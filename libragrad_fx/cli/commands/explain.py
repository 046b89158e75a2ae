"""`libragrad-fx explain`: a heat map of one prediction and its numbers."""
from __future__ import annotations

import argparse
import json

import torch

from ..common import METHOD_ALIASES, emit, load, method_names, needs_original, same_preset

TAKES_MODEL = True


def register(commands, parents) -> None:
    sub = commands.add_parser("explain", parents=parents, help="a heat map of one prediction (PNG)")
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="PATH", help="an image file (resized and normalised for the model)")
    source.add_argument("--random", action="store_true", help="a random input (seeded by --seed)")
    sub.add_argument("--method", choices=method_names(), help="attribution method (default ixg; fullgrad for clip)")
    sub.add_argument("--target", type=int, help="class index to explain (default: the predicted class)")
    sub.add_argument("--compare", action="store_true", help="the vanilla map beside the LibraGrad one")
    sub.add_argument("--out", required=True, metavar="FILE.png")
    sub.add_argument("--json", action="store_true", help="print the numbers as JSON")
    sub.add_argument("--prompt", action="append", metavar="TEXT",
                     help="a CLIP model (clip): the text whose match with the image is explained (repeatable)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import clip
    from ..images import load_image

    if clip.is_clip(args.model):
        return clip.run(args)
    if args.prompt:
        from ...core.errors import UsageError

        raise UsageError(f"--prompt applies to a CLIP model (clip), not to {args.model}")
    args.method = args.method or "ixg"
    if not args.out.endswith(".png"):
        from ...core.errors import UsageError

        raise UsageError(f"--out {args.out!r} must end in .png")
    loaded, x = load(args)
    picture = None
    if args.image:
        x, picture = load_image(args.image, x.shape, loaded.mean, loaded.std)
    panels = []
    if args.compare:
        needs_original(loaded, "explain --compare")
        panels.append(_explain_one(loaded.model, x, args, "vanilla"))
    if loaded.transformed:
        same_preset(loaded, args)
        panels.append(_explain_one(loaded.model, x, args, args.preset, transformed=True))
    else:
        panels.append(_explain_one(loaded.model, x, args, args.preset))
    _save_panels(panels, x, picture, loaded, args)
    result = {"model": loaded.label, "method": args.method, "input": args.image or "random",
              "out": args.out, "explanations": [p["numbers"] for p in panels]}
    if args.json:
        emit(json.dumps(result, indent=2), None)
    else:
        for p in panels:
            n = p["numbers"]
            line = f"{n['preset']:>10}  {args.method}: target {n['target']}, f_t(x) {n['logit']:.5g}"
            if "attributed" in n:
                line += (f", attribution sum {n['attributed']:.5g} (complete: {n['expected']:.5g}), "
                         f"error {n['abs_error']:.2e} (relative {n['rel_error']:.2e})")
            print(line)
        print(f"wrote {args.out}")
    return 0


def _explain_one(model, x: torch.Tensor, args: argparse.Namespace, preset: str, transformed: bool = False) -> dict:
    from ... import attr
    from ...attr.completeness import METHODS as COMPLETENESS_METHODS
    from ...attr.completeness import completeness

    method = METHOD_ALIASES.get(args.method, args.method)
    method_cls = attr.METHODS[method]
    explainer = method_cls(model) if transformed else method_cls(model, preset=preset, capture=args.capture)
    with torch.no_grad():
        output = explainer.forward((x,))
    classes = output.shape[-1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    if args.target is not None and classes is not None and not 0 <= args.target < classes:
        from ...core.errors import UsageError

        raise UsageError(f"--target {args.target} is out of range: the model has {classes} classes (0..{classes - 1})")
    index = attr.targets(output, args.target)
    logit = float(attr.target_values(output, index)[0])
    heat = explainer.attribute(x, target=index)
    numbers = {"preset": preset, "target": int(index[0]), "logit": logit}
    if method in COMPLETENESS_METHODS:  # maps that add up to what they explain
        check = completeness(model if transformed else explainer.graph_module((x,)), x, target=index,
                             method=method)
        numbers.update(attributed=float(check.attributed[0]), expected=float(check.reference[0]),
                       abs_error=float(check.abs_error[0]), rel_error=float(check.rel_error[0]))
    heat = heat if isinstance(heat, torch.Tensor) else heat[0]
    # gradient maps are shaped like the input and signed; CAM / rollout maps are grids of weights
    return {"numbers": numbers, "map": heat[0].detach(), "signed": heat.dim() == x.dim()}


def _save_panels(panels: list[dict], x: torch.Tensor, picture, loaded, args: argparse.Namespace) -> None:
    from matplotlib.figure import Figure

    from ...viz import to_heatmap, to_image

    image = to_image(picture) if picture is not None else to_image(x[0])
    size = image.shape[:2]
    figure = Figure(figsize=(4 * len(panels), 4.4), dpi=100, layout="constrained")
    for i, panel in enumerate(panels):
        heat = to_heatmap(panel["map"], size)
        signed = panel["signed"]
        bound = float(abs(heat).max()) or 1.0
        low, high = (-bound, bound) if signed else (float(heat.min()), float(heat.max()) or 1.0)
        axes = figure.add_subplot(1, len(panels), i + 1)
        axes.imshow(image, interpolation="nearest")
        axes.imshow(heat, cmap="bwr" if signed else "jet", alpha=0.55, vmin=low, vmax=high, interpolation="bilinear")
        axes.set_axis_off()
        n = panel["numbers"]
        title = f"{n['preset']} {args.method}, target {n['target']}"
        if "rel_error" in n:
            title += f"\ncompleteness error {n['rel_error']:.1e}"
        axes.set_title(title, fontsize=9)
    figure.savefig(args.out, format="png")
