"""The ``libragrad-fx`` command line: see what the transform does to a model, check it, explain with it, ship it.

    libragrad-fx inspect MODEL [--preset P] [--format text|json|dot]
    libragrad-fx diff    MODEL [--preset P] [--format text|json]
    libragrad-fx check   MODEL [--preset P] [--json]
    libragrad-fx explain MODEL (--image PATH | --random) --out FILE.png [--method M] [--target N] [--compare] [--json]
    libragrad-fx export  MODEL --out FILE.pt2 [--preset P]

MODEL is ``timm:NAME``, ``package.module:factory``, a bundled model name or a ``.pt2`` file written
by ``export`` (:mod:`libragrad_fx.specs`). Exit codes: 0 success, 1 ``check``/``explain`` found a
property that does not hold, 2 bad input or a model the tool cannot handle (one line on stderr;
``--debug`` adds the traceback).
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

__all__ = ["main", "build_parser"]

PROG = "libragrad-fx"


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


def _presets() -> list[str]:
    from .transform import PRESETS

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

    sub = commands.add_parser("export", parents=[model, rewrite], help="torch.export the transformed model (.pt2)")
    sub.add_argument("--out", required=True, metavar="FILE.pt2")
    sub.set_defaults(run=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    from .capture import CaptureError
    from .errors import UsageError

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
        return _fail(args, f"{type(error).__name__}: {_first_line(error)} (rerun with --debug for the traceback)")


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"{PROG}: error: {_first_line(message)}", file=sys.stderr)
    return 2


def _first_line(error: object) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The commands print what the transform reports; its warnings would say it twice."""
    from .report import UnclassifiedOpWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnclassifiedOpWarning)
        yield


# --- shared steps ----------------------------------------------------------------------------------

def _load(args: argparse.Namespace):
    """The model and an example input it accepts (a probe forward turns a wrong shape into one line)."""
    from .errors import UsageError
    from .specs import example_input, load_model

    loaded = load_model(args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
                        input_shape=args.input_shape, seed=args.seed)
    x = example_input(loaded, seed=args.seed)
    try:
        with torch.no_grad():
            loaded.model(x)
    except Exception as error:
        raise UsageError(f"{loaded.label} rejects an input of shape {tuple(x.shape)} ({type(error).__name__}: "
                         f"{_first_line(error)}); pass --input-shape with the shape it expects") from error
    return loaded, x


def _transform(loaded, x: torch.Tensor, args: argparse.Namespace, preset: str | None = None):
    from .transform import transform

    return transform(loaded.model, x, preset=preset or args.preset, capture=args.capture)


def _no_pt2(loaded, command: str) -> None:
    from .errors import UsageError

    if loaded.kind == "pt2":
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
    from .errors import UsageError
    from .export import program_rules

    recorded = loaded.exported.report if loaded.exported is not None else None
    if recorded is None:
        gm = _transform(loaded, x, args)
        return gm.libragrad_report, gm.libragrad_report.to_dict(), gm
    if args.preset != recorded.preset:
        raise UsageError(f"{loaded.label} was exported with preset {recorded.preset!r}; "
                         f"inspect the original model for preset {args.preset!r}")
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
                        ("head (kept as is)", report.head)):
        lines += _family_tables(title, rows)
    lines.append("")
    if report.unclassified:
        lines.append(f"unclassified ({len(report.unclassified)}): gradient left vanilla")
        width = max(len(u.node) for u in report.unclassified)
        lines += [f"  {u.node:<{width}}  {u.op}  ({u.reason})" for u in report.unclassified]
    else:
        lines.append("unclassified: none")
    return "\n".join(lines)


def _family_tables(title: str, rows: list) -> list[str]:
    """Rows grouped by family; a node with several edits (query and key detached) on one line."""
    merged: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for row in rows:
        op, rules = merged.setdefault((row.family, row.node), (row.op, []))
        if row.rule not in rules:
            rules.append(row.rule)
    out = []
    for family in sorted({f for f, _ in merged}):
        entries = [(node, op, rules) for (f, node), (op, rules) in merged.items() if f == family]
        out.append(f"\n{title}, {family} ({len(entries)} nodes):")
        width = max(len(node) for node, _, _ in entries)
        op_width = max(len(op) for _, op, _ in entries)
        out += [f"  {node:<{width}}  {op:<{op_width}}  {'; '.join(rules)}" for node, op, rules in entries]
    return out


# --- diff ------------------------------------------------------------------------------------------

def _cmd_diff(args: argparse.Namespace) -> int:
    from .graphdiff import code_diff, node_changes

    loaded, x = _load(args)
    _no_pt2(loaded, "diff")
    before = _transform(loaded, x, args, preset="vanilla")
    after = _transform(loaded, x, args)
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
    from .errors import UsageError
    from .export import load, reference_mismatch, save

    if not args.out.endswith(".pt2"):
        raise UsageError(f"--out {args.out!r} must end in .pt2 (that is how MODEL specs recognise the file)")
    loaded, x = _load(args)
    _no_pt2(loaded, "export")
    gm = _transform(loaded, x, args)
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
