"""`libragrad-fx diff`: what the rewrite changed, node by node, and the generated code's diff."""
from __future__ import annotations

import argparse
import json

from ..common import emit, load, needs_original, node_counts, transform
from ..validate import nonnegative_int

TAKES_MODEL = True


def register(commands, parents) -> None:
    sub = commands.add_parser("diff", parents=parents, help="what changed, node by node")
    sub.add_argument("--format", choices=("text", "json"), default="text",
                     help="text (default) or json (the same as data)")
    sub.add_argument("--context", type=nonnegative_int, default=1, metavar="N",
                     help="lines of context in the code diff (default 1)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..graphdiff import code_diff, node_changes

    loaded, x = load(args)
    needs_original(loaded, "diff")
    before = transform(loaded.model, x, args, preset="vanilla")
    after = transform(loaded.model, x, args)
    changes = node_changes(before, after)
    diff = code_diff(before, after, context=args.context, label=loaded.label)
    if args.format == "json":
        emit(json.dumps({"model": loaded.label, "preset": args.preset, "capture": after.libragrad_report.capture,
                          "changes": [c.to_dict() for c in changes], "code_diff": diff}, indent=2), None)
        return 0
    lines = [f"{loaded.label}: preset {args.preset}, captured with {after.libragrad_report.capture}; "
             f"{len(changes)} nodes changed: {node_counts(after.libragrad_report)}"]
    for change in changes:
        lines.append(f"\n{change.node}  {change.op}  [{change.family}] {change.rule}")
        lines += [f"  - {line}" for line in change.removed] + [f"  + {line}" for line in change.added]
    lines += ["", diff]
    emit("\n".join(lines), None)
    return 0
