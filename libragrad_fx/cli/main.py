"""The ``libragrad-fx`` command line: see what the transform does to a model, check it, explain with it, ship it.

    libragrad-fx inspect MODEL [--preset P] [--format text|json|dot]
    libragrad-fx diff    MODEL [--preset P] [--format text|json]
    libragrad-fx check   MODEL [--preset P] [--tol T] [--json]
    libragrad-fx explain MODEL (--image PATH | --random) --out FILE.png [--method M] [--target N] [--compare] [--json]
    libragrad-fx export  MODEL --out FILE.pt2 [--preset P]
    libragrad-fx demo    [--out FILE.png] [--seed N] [--model NAME]
    libragrad-fx bench   [--n N] [--models M,..] [--methods M,..] [--seed N] [--out DIR] [--jobs J]

MODEL is ``timm:NAME``, ``package.module:factory``, a bundled model name or a ``.pt2`` file written
by ``export`` (:mod:`libragrad_fx.cli.specs`). Exit codes: 0 success, 1 ``check`` found a property
that does not hold, 2 bad input or a model the tool cannot handle (one line on stderr; ``--debug``
adds the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from typing import Callable, Iterator, Sequence

import torch

from ..core.errors import first_line

__all__ = ["main", "build_parser"]

PROG = "libragrad-fx"

# short names the issue and the paper use, beside libragrad_fx.attr.METHODS' own
METHOD_ALIASES = {"ixg": "input_x_gradient", "ig": "integrated_gradients", "rollout": "attention_rollout"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _shape(text: str) -> tuple[int, ...]:
    from .specs import parse_shape

    try:
        return parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-kwargs is not JSON ({error.msg}): write e.g. "
                                         "'{\"img_size\": 64}'") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--model-kwargs must be a JSON object, e.g. '{\"img_size\": 64}'")
    return value


def _method_names() -> list[str]:
    from ..attr import METHODS

    return list(METHOD_ALIASES) + list(METHODS)


def _presets() -> list[str]:
    from ..core.transform import PRESETS

    return list(PRESETS)


def build_parser() -> argparse.ArgumentParser:
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("model", metavar="MODEL",
                       help="timm:NAME, package.module:factory, a bundled model name, or FILE.pt2")
    model.add_argument("--checkpoint", metavar="FILE", help="weights to load (.pth/.safetensors state dict)")
    model.add_argument("--model-kwargs", type=_kwargs, default={}, metavar="JSON",
                       help="keyword arguments for the model's constructor, e.g. '{\"img_size\": 64}'")
    model.add_argument("--input-shape", type=_shape, metavar="N,C,H,W",
                       help="input shape where the model's default cannot be read (e.g. 1,3,224,224)")
    model.add_argument("--seed", type=int, default=0, help="seed of random weights and random inputs (default 0)")
    model.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")
    rewrite = argparse.ArgumentParser(add_help=False)
    rewrite.add_argument("--preset", default="libragrad", choices=_presets(),
                         help="rule families to apply (default libragrad: all four)")
    rewrite.add_argument("--capture", default="auto", choices=("auto", "fx", "export"),
                         help="how to capture the graph (default auto: torch.fx, torch.export where fx fails)")

    parser = _Parser(prog=PROG, description="Faithful gradient explanations: see, check and ship the "
                     "LibraGrad rewrite of a PyTorch model.")
    parser.add_argument("--debug", action="store_true", default=False, help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    sub = commands.add_parser("inspect", parents=[model, rewrite], help="how the graph was captured and rewritten")
    sub.add_argument("--format", choices=("text", "json", "dot"), default="text")
    sub.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    sub.set_defaults(run=_cmd_inspect)

    sub = commands.add_parser("diff", parents=[model, rewrite], help="what changed, node by node")
    sub.add_argument("--format", choices=("text", "json"), default="text")
    sub.add_argument("--context", type=int, default=1, help="lines of context in the code diff (default 1)")
    sub.set_defaults(run=_cmd_diff)

    sub = commands.add_parser("check", parents=[model, rewrite], help="forward equality, completeness, timings")
    sub.add_argument("--tol", type=float, default=1e-4, help="relative completeness error allowed (default 1e-4)")
    sub.add_argument("--json", action="store_true", help="print the results as JSON")
    sub.set_defaults(run=_cmd_check)

    sub = commands.add_parser("explain", parents=[model, rewrite], help="a heat map of one prediction (PNG)")
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="PATH", help="an image file (resized and normalised for the model)")
    source.add_argument("--random", action="store_true", help="a random input (seeded by --seed)")
    sub.add_argument("--method", default="ixg", choices=_method_names(), help="attribution method (default ixg)")
    sub.add_argument("--target", type=int, help="class index to explain (default: the predicted class)")
    sub.add_argument("--compare", action="store_true", help="the vanilla map beside the LibraGrad one")
    sub.add_argument("--out", required=True, metavar="FILE.png")
    sub.add_argument("--json", action="store_true", help="print the numbers as JSON")
    sub.set_defaults(run=_cmd_explain)

    sub = commands.add_parser("export", parents=[model, rewrite], help="torch.export the transformed model (.pt2)")
    sub.add_argument("--out", required=True, metavar="FILE.pt2")
    sub.set_defaults(run=_cmd_export)

    sub = commands.add_parser("demo", help="two objects, both classes explained by the bundled ViT, vanilla beside "
                              "LibraGrad (PNG)")
    sub.add_argument("--out", default="libragrad_demo.png", metavar="FILE.png",
                     help="where to write the grid (default libragrad_demo.png)")
    sub.add_argument("--seed", type=int, default=None, help="image seed (default: the held-out seed)")
    sub.add_argument("--model", default="vit", help="bundled model (default vit)")
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    sub.set_defaults(run=_cmd_demo)

    sub = commands.add_parser("bench", help="the faithfulness comparison on the bundled models (CSV, table, plots)")
    sub.add_argument("--n", type=int, default=500, help="images per model (default 500)")
    sub.add_argument("--models", type=_list, help="bundled models, comma-separated (default: all)")
    sub.add_argument("--methods", type=_list, help="methods, comma-separated (default: all; a gradient method "
                     "runs vanilla and libragrad)")
    sub.add_argument("--seed", type=int, default=None, help="image seed (default: the held-out seed)")
    sub.add_argument("--out", default="docs/bench/faithfulness", metavar="DIR",
                     help="output directory (default docs/bench/faithfulness)")
    sub.add_argument("--batch", type=int, default=32, help="targets per attribution call (default 32)")
    sub.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    sub.add_argument("--sg-samples", type=int, default=16, help="SmoothGrad samples (default 16)")
    sub.add_argument("--baseline", choices=("zero", "mean"), default="zero",
                     help="what deleted patches become: zero or each image's mean colour (default zero)")
    sub.add_argument("--jobs", type=int, default=1, help="models measured in parallel processes (default 1)")
    sub.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    sub.add_argument("--lxt-python", metavar="PYTHON", help="a Python with lxt for AttnLRP (default "
                     "$LIBRAGRAD_FX_LXT_PYTHON, else this one; skipped with a note where none has lxt)")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    sub.set_defaults(run=_cmd_bench)
    return parser


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    from ..core.capture import CaptureError
    from ..core.errors import UsageError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed in one line
        return int(stop.code or 0)
    try:
        with _quiet():
            return args.run(args)
    except (UsageError, CaptureError, OSError) as error:
        return _fail(args, str(error))
    except Exception as error:  # a bug, or a model the core cannot handle: still one line
        return _fail(args, f"{type(error).__name__}: {first_line(error)} (rerun with --debug for the traceback)")


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"{PROG}: error: {first_line(message, limit=2000)}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The commands print what the transform reports; its warnings would say it twice."""
    from ..core.report import UnclassifiedOpWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnclassifiedOpWarning)
        yield


# --- shared steps ----------------------------------------------------------------------------------

def _load(args: argparse.Namespace):
    """The model and an example input it accepts (a probe forward turns a wrong shape into one line)."""
    from ..core.errors import UsageError
    from .specs import example_input, load_model

    loaded = load_model(args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
                        input_shape=args.input_shape, seed=args.seed)
    x = example_input(loaded, seed=args.seed)
    try:
        with torch.no_grad():
            loaded.model(x)
    except Exception as error:
        raise UsageError(f"{loaded.label} rejects an input of shape {tuple(x.shape)} ({type(error).__name__}: "
                         f"{first_line(error)}); pass --input-shape with the shape it expects") from error
    return loaded, x


def _transform(model, x: torch.Tensor, args: argparse.Namespace, preset: str | None = None):
    from ..core.transform import transform

    return transform(model, x, preset=preset or args.preset, capture=args.capture)


def _needs_original(loaded, command: str) -> None:
    from ..core.errors import UsageError

    if loaded.transformed:
        raise UsageError(f"{command} needs the original model, and {loaded.label} holds only the transformed "
                         "program: run it on the MODEL you exported")


def _emit(text: str, out: str | None) -> None:
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


# --- inspect ---------------------------------------------------------------------------------------

def _cmd_inspect(args: argparse.Namespace) -> int:
    from .dot import to_dot

    loaded, x = _load(args)
    report, data, gm = _inspect_report(loaded, x, args)
    data = {"model": loaded.label, "input_shape": list(x.shape), **data}
    if args.format == "json":
        _emit(json.dumps(data, indent=2), args.out)
    elif args.format == "dot":
        _emit(to_dot(gm, report, title=f"{loaded.label} ({report.preset})"), args.out)
    else:
        _emit(_render_inspect(loaded.label, tuple(x.shape), report, data), args.out)
    return 0


def _inspect_report(loaded, x: torch.Tensor, args: argparse.Namespace):
    """The report to show; for a .pt2 written by ``export``, the one it recorded (the program is
    already transformed) and the rule nodes found in the program itself."""
    from ..core.export import program_rules

    if not loaded.transformed:
        gm = _transform(loaded.model, x, args)
        return gm.libragrad_report, gm.libragrad_report.to_dict(), gm
    _same_preset(loaded, args)
    recorded = loaded.exported.report
    data = recorded.to_dict()
    data["file"] = {"path": loaded.label, "program_rule_nodes": program_rules(loaded.exported.program)}
    return recorded, data, loaded.model


def _render_inspect(label: str, shape: tuple[int, ...], report, data: dict) -> str:
    nodes = sum(report.rewrites.values())
    lines = [f"{label}: {report.model}, preset {report.preset}, input {'x'.join(map(str, shape))}",
             f"capture: {report.capture}, {report.nodes} nodes"]
    if report.forward_check:
        lines.append(f"forward: {report.forward_check}")
    lines += [f"note: {n}" for n in report.notes]
    counts = ", ".join(f"{family} {n}" for family, n in sorted(report.rewrites.items())) or "none"
    lines.append(f"rewrites: {counts} ({nodes} nodes)")
    lines.append("already complete: " + (", ".join(f"{k} {v}" for k, v in sorted(report.complete.items())) or "none")
                 + f"; no gradient after the rules: {report.pruned} nodes")
    if "file" in data:
        info = data["file"]
        lines.append(f"exported program {info['path']}: nodes applying a rule: " + (", ".join(
            f"{k} {v}" for k, v in sorted(info["program_rule_nodes"].items())) or "none"))
    for title, rows in (("rewritten", report.rewritten), ("skipped by the preset", report.skipped),
                        ("head (kept as is)", report.head),
                        ("backward pruned (same gradient, less work)", report.backward)):
        lines += _family_tables(title, rows)
    return "\n".join(lines + [""] + report.unclassified_table())


def _family_tables(title: str, rows: list) -> list[str]:
    """Rows grouped by family, then by (op, rule): each rule once, followed by every node it applies to."""
    import textwrap

    merged: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for row in rows:  # a node with several edits (query and key detached) reads as one rule
        op, rules = merged.setdefault((row.family, row.node), (row.op, []))
        if row.rule not in rules:
            rules.append(row.rule)
    out = []
    for family in sorted({f for f, _ in merged}):
        groups: dict[tuple[str, str], list[str]] = {}
        for (f, node), (op, rules) in merged.items():
            if f == family:
                groups.setdefault((op, "; ".join(rules)), []).append(node)
        count = sum(len(nodes) for nodes in groups.values())
        out.append(f"\n{title}, {family} ({count} nodes):")
        for (op, rule), nodes in groups.items():
            out.append(f"  {op}: {rule}")
            out += textwrap.wrap(", ".join(nodes), width=100, initial_indent="    ", subsequent_indent="    ",
                                 break_on_hyphens=False)
    return out


# --- diff ------------------------------------------------------------------------------------------

def _cmd_diff(args: argparse.Namespace) -> int:
    from .graphdiff import code_diff, node_changes

    loaded, x = _load(args)
    _needs_original(loaded, "diff")
    before = _transform(loaded.model, x, args, preset="vanilla")
    after = _transform(loaded.model, x, args)
    changes = node_changes(before, after)
    diff = code_diff(before, after, context=args.context, label=loaded.label)
    if args.format == "json":
        _emit(json.dumps({"model": loaded.label, "preset": args.preset, "capture": after.libragrad_report.capture,
                          "changes": [c.to_dict() for c in changes], "code_diff": diff}, indent=2), None)
        return 0
    lines = [f"{loaded.label}: {len(changes)} nodes rewritten (preset {args.preset}, captured with "
             f"{after.libragrad_report.capture})"]
    for change in changes:
        lines.append(f"\n{change.node}  {change.op}  [{change.family}] {change.rule}")
        lines += [f"  - {line}" for line in change.removed] + [f"  + {line}" for line in change.added]
    lines += ["", diff]
    _emit("\n".join(lines), None)
    return 0


# --- export ----------------------------------------------------------------------------------------

def _cmd_export(args: argparse.Namespace) -> int:
    from ..core.errors import UsageError
    from ..core.export import load, reference_mismatch, save

    if not args.out.endswith(".pt2"):
        raise UsageError(f"--out {args.out!r} must end in .pt2 (that is how MODEL specs recognise the file)")
    loaded, x = _load(args)
    _needs_original(loaded, "export")
    gm = _transform(loaded.model, x, args)
    exported = save(gm, x, args.out, label=loaded.label, mean=loaded.mean, std=loaded.std)
    back = load(args.out)
    mismatch = reference_mismatch(back)
    if mismatch is not None:
        raise RuntimeError(f"the reloaded program is not the transformed model: {mismatch}")
    rel = _gradient_gap(gm, back.module, x)
    report = gm.libragrad_report
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB): {loaded.label}, preset {report.preset}, "
          f"{sum(report.rewrites.values())} nodes rewritten")
    for note in exported.meta.get("notes", []):
        print(f"note: {note}")
    print(f"reloaded: forward bit-identical on a batch of 2; input gradient rel. difference {rel:.1e} "
          f"on a batch of {x.shape[0]}")
    print(f"load it with: import libragrad_fx, torch; m = torch.export.load({args.out!r}).module()")
    return 0


# --- check -----------------------------------------------------------------------------------------

def _cmd_check(args: argparse.Namespace) -> int:
    import time

    from .checks import run_checks
    from ..core.export import reference_mismatch

    loaded, x = _load(args)
    if loaded.transformed:
        _same_preset(loaded, args)
        report = run_checks(loaded.label, loaded.model, x, forward=lambda: reference_mismatch(loaded.exported),
                            preset=args.preset, tol=args.tol)
    else:
        start = time.perf_counter()
        gm = _transform(loaded.model, x, args)
        seconds = time.perf_counter() - start
        report = run_checks(loaded.label, gm, x, original=loaded.model, preset=args.preset, tol=args.tol,
                            transform=lambda m: _transform(m, x, args), timings={"transform": seconds})
    _emit(json.dumps(report.to_dict(), indent=2) if args.json else str(report), None)
    return 0 if report.ok else 1


def _same_preset(loaded, args: argparse.Namespace) -> None:
    from ..core.errors import UsageError

    made = loaded.exported.report.preset
    if args.preset != made:
        raise UsageError(f"{loaded.label} was exported with preset {made!r}: run on the original model for "
                         f"preset {args.preset!r}")


# --- explain ---------------------------------------------------------------------------------------



def _cmd_explain(args: argparse.Namespace) -> int:
    from .images import load_image

    if not args.out.endswith(".png"):
        from ..core.errors import UsageError

        raise UsageError(f"--out {args.out!r} must end in .png")
    loaded, x = _load(args)
    picture = None
    if args.image:
        x, picture = load_image(args.image, x.shape, loaded.mean, loaded.std)
    panels = []
    if args.compare:
        _needs_original(loaded, "explain --compare")
        panels.append(_explain_one(loaded.model, x, args, "vanilla"))
    if loaded.transformed:
        _same_preset(loaded, args)
        panels.append(_explain_one(loaded.model, x, args, args.preset, transformed=True))
    else:
        panels.append(_explain_one(loaded.model, x, args, args.preset))
    _save_panels(panels, x, picture, loaded, args)
    result = {"model": loaded.label, "method": args.method, "input": args.image or "random",
              "out": args.out, "explanations": [p["numbers"] for p in panels]}
    if args.json:
        _emit(json.dumps(result, indent=2), None)
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
    from .. import attr
    from ..attr.completeness import METHODS as COMPLETENESS_METHODS
    from ..attr.completeness import completeness

    method = METHOD_ALIASES.get(args.method, args.method)
    method_cls = attr.METHODS[method]
    explainer = method_cls(model) if transformed else method_cls(model, preset=preset, capture=args.capture)
    with torch.no_grad():
        output = explainer.forward((x,))
    classes = output.shape[-1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    if args.target is not None and classes is not None and not 0 <= args.target < classes:
        from ..core.errors import UsageError

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

    from ..viz import to_heatmap, to_image

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


# --- demo and bench -----------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
    from ..bench import models
    from ..bench.demo import run
    from ..core.errors import UsageError

    if not args.out.endswith(".png"):
        raise UsageError(f"--out {args.out!r} must end in .png")
    if args.model not in models.names():
        raise UsageError(f"--model: unknown bundled model {args.model!r}; valid: {', '.join(models.names())}")
    result = run(args.out, seed=args.seed, model_name=args.model)
    print(result.text())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench import models
    from ..bench.compare import run
    from ..bench.faithfulness import Config, resolve_methods
    from ..core.errors import UsageError

    valid = models.names()
    chosen = args.models or valid
    unknown = [m for m in chosen if m not in valid]
    if unknown:
        raise UsageError(f"--models: unknown bundled model(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        methods = resolve_methods(args.methods)
    except ValueError as error:
        raise UsageError(f"--methods: {error}") from error
    for name in ("n", "batch", "ig_steps", "sg_samples", "jobs", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    config = Config(n=args.n, seed=args.seed, batch=args.batch, ig_steps=args.ig_steps, sg_samples=args.sg_samples,
                    lxt_python=args.lxt_python, threads=args.threads, baseline=args.baseline)
    outputs = run(chosen, methods, config, Path(args.out), jobs=args.jobs, show=not args.no_progress)
    for note in (n for r in outputs.results for n in r.notes):
        print(f"note: {note}")
    for path in outputs.files:
        print(f"wrote {path}")
    return 0


def _gradient_gap(a: Callable, b: Callable, x: torch.Tensor) -> float:
    """||grad_a - grad_b|| / ||grad_a|| of the summed output's top logit, w.r.t. the input."""
    grads = []
    for model in (a, b):
        xi = x.detach().clone().requires_grad_(True)
        out = model(xi)
        target = out.detach().flatten(1).argmax(1)
        (g,) = torch.autograd.grad(out.flatten(1).gather(1, target[:, None]).sum(), xi)
        grads.append(g)
    return float((grads[0] - grads[1]).norm() / grads[0].norm().clamp_min(1e-30))


if __name__ == "__main__":
    sys.exit(main())
