"""`libragrad-fx explain`: a heat map of one prediction and its numbers (``--text``: token scores of an
``hf:`` model, :mod:`libragrad_fx.cli.text_explain`)."""
from __future__ import annotations

import argparse
import json

import torch

from ..common import METHOD_ALIASES, emit, load, method_names, needs_original, same_preset
from ..progress import step
from ..validate import nonnegative_int, output_file

TAKES_MODEL = True


def register(commands, parents) -> None:
    sub = commands.add_parser("explain", parents=parents, help="a heat map of one prediction (PNG), or token "
                              "scores of a text (--text, hf: models)")
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="PATH", help="an image file (resized and normalised for the model)")
    source.add_argument("--random", action="store_true", help="a random input (seeded by --seed)")
    source.add_argument("--text", metavar="TEXT", help="a text to explain (hf:DIR models): coloured tokens")
    sub.add_argument("--pair", metavar="TEXT", help="--text: the text to compare with (sentence encoders), or a "
                     "classifier's second segment")
    sub.add_argument("--method", default=None, choices=method_names(),
                     help="attribution method (default ixg for images, fullgrad for text and clip)")
    sub.add_argument("--target", metavar="T", help="class index to explain (default: the predicted class); --text: a label "
                     "name or index, a token or token id, or a causal LM's continuation")
    sub.add_argument("--compare", action="store_true", help="the vanilla map beside the LibraGrad one")
    sub.add_argument("--out", metavar="FILE.png", help="where to write the picture (required for images)")
    sub.add_argument("--html", metavar="FILE.html", help="--text: also write a self-contained HTML page")
    sub.add_argument("--json", action="store_true", help="print the numbers as JSON")
    sub.add_argument("--prompt", action="append", metavar="TEXT",
                     help="a CLIP model (clip): the text whose match with the image is explained (repeatable)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ...core.errors import UsageError
    from .. import clip
    from ..images import load_image

    if clip.is_clip(args.model):
        return clip.run(args)
    if args.prompt:
        raise UsageError(f"--prompt applies to a CLIP model (clip), not to {args.model}")
    if args.text is not None or args.model.startswith("hf:"):
        from .. import text_explain

        return text_explain.run(args)
    if args.pair is not None or args.html is not None:
        raise UsageError("--pair and --html go with --text (an hf: model)")
    if args.out is None:
        raise UsageError("--out FILE.png is required: where to write the picture")
    output_file(args.out, suffix=".png")
    args.method = args.method or "ixg"
    if args.target is not None:
        try:
            args.target = nonnegative_int(args.target)
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"--target: {error} (a class index for an image model)") from error
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
    for p in panels:
        if loaded.classes is not None and p["numbers"]["target"] < len(loaded.classes):
            p["numbers"]["target_name"] = loaded.classes[p["numbers"]["target"]]
    step("drawing")
    _save_panels(panels, x, picture, loaded, args)
    result = {"model": loaded.label, "method": args.method, "input": args.image or "random",
              "out": args.out, "explanations": [p["numbers"] for p in panels]}
    if args.json:
        emit(json.dumps(result, indent=2), None)
    else:
        for p in panels:
            n = p["numbers"]
            suffix = f"+{args.pixel_rule}" if getattr(args, "pixel_rule", None) else ""
            line = (f"{n['preset'] + suffix:>{10 + len(suffix)}}  {args.method}: target "
                    f"{loaded.class_name(n['target'])}, f_t(x) {n['logit']:.5g}")
            if "attributed" in n:
                line += (f", attribution sum {n['attributed']:.5g} (complete: {n['expected']:.5g}), "
                         f"error {n['abs_error']:.2e} (relative {n['rel_error']:.2e})")
            print(line)
        if _incomplete_ixg(args.method, panels):
            print(IXG_NOTE)
        print(f"wrote {args.out}")
    return 0


def _explain_one(model, x: torch.Tensor, args: argparse.Namespace, preset: str, transformed: bool = False) -> dict:
    from ... import attr
    from ...attr.completeness import METHODS as COMPLETENESS_METHODS
    from ...attr.completeness import completeness

    method = METHOD_ALIASES.get(args.method, args.method)
    step(f"explaining with {method} ({'vanilla' if preset == 'vanilla' else 'LibraGrad'} backward)")
    method_cls = attr.METHODS[method]
    explainer = method_cls(model) if transformed else method_cls(model, preset=preset, capture=args.capture,
                                                                 pixel_rule=args.pixel_rule)
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


IXG_NOTE = ("note: Input x Gradient leaves the biases' share of the score out (biases, position embeddings, "
            "class tokens), so it adds up only on a bias-free model; FullGrad adds that share back "
            "(--method fullgrad) and is complete under LibraGrad")


def _incomplete_ixg(method: str, panels: list[dict], limit: float = 1e-3) -> bool:
    """Whether to explain an Input x Gradient error: large enough to be the biases, not rounding."""
    return METHOD_ALIASES.get(method, method) == "input_x_gradient" and any(
        p["numbers"].get("rel_error", 0.0) > limit for p in panels)


def _save_panels(panels: list[dict], x: torch.Tensor, picture, loaded, args: argparse.Namespace) -> None:
    """The input beside each map (drawn over the input in grey), a colour bar under each map saying what
    its colours mean, and one title naming the method, the model and the target."""
    from matplotlib.figure import Figure

    from ...viz import colour_bar, draw_map, to_heatmap, to_image

    image = to_image(picture) if picture is not None else to_image(x[0])
    size = image.shape[:2]
    columns = len(panels) + 1
    figure = Figure(figsize=(3.2 * columns, 4.6), dpi=100, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title("input" if args.image else "input (random)", fontsize=9)
    axes[0].set_axis_off()
    for ax, panel in zip(axes[1:], panels):
        n = panel["numbers"]
        mappable = draw_map(ax, to_heatmap(panel["map"], size), signed=panel["signed"], image=image)
        colour_bar(figure, mappable, ax, signed=panel["signed"])
        backward = {"vanilla": "vanilla backward", "libragrad": "LibraGrad backward"}.get(
            n["preset"], f"LibraGrad backward, preset {n['preset']}")
        backward += ", dissent pixel rule" if getattr(args, "pixel_rule", None) else ""
        title = backward + (f"\ncompleteness error {n['rel_error']:.1e}" if "rel_error" in n else "")
        ax.set_title(title, fontsize=9)
    n = panels[-1]["numbers"]
    figure.suptitle(f"{args.method} on {loaded.label}: target {loaded.class_name(n['target'])}, "
                    f"score f_t(x) = {n['logit']:.4g}", fontsize=10)
    figure.savefig(args.out, format="png")
