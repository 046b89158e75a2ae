"""`libragrad-fx inspect`: how the graph was captured and what was rewritten."""
from __future__ import annotations

import argparse
import json

import torch

from ..common import emit, load, node_counts, same_preset, transform

TAKES_MODEL = True


def register(commands, parents) -> None:
    sub = commands.add_parser("inspect", parents=parents, help="how the graph was captured and rewritten")
    sub.add_argument("--format", choices=("text", "json", "dot"), default="text",
                     help="text (default), json (the same as data) or dot (Graphviz, rewritten nodes coloured)")
    sub.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..dot import to_dot
    from ..validate import output_file

    if args.out:
        output_file(args.out)
    loaded, x = load(args)
    report, data, gm = _inspect_report(loaded, x, args)
    data = {"model": loaded.label, "input_shape": list(x.shape), **data}
    if args.format == "json":
        emit(json.dumps(data, indent=2), args.out)
    elif args.format == "dot":
        emit(to_dot(gm, report, title=f"{loaded.label} ({report.preset})"), args.out)
    else:
        emit(_render_inspect(loaded.label, tuple(x.shape), report, data), args.out)
    return 0


def _inspect_report(loaded, x: torch.Tensor, args: argparse.Namespace):
    """The report to show; for a .pt2 written by ``export``, the one it recorded (the program is
    already transformed) and the rule nodes found in the program itself."""
    from ...core.export import program_rules

    if not loaded.transformed:
        gm = transform(loaded.model, x, args)
        return gm.libragrad_report, gm.libragrad_report.to_dict(), gm
    same_preset(loaded, args)
    recorded = loaded.exported.report
    data = recorded.to_dict()
    data["file"] = {"path": loaded.label, "program_rule_nodes": program_rules(loaded.exported.program)}
    return recorded, data, loaded.model


def _render_inspect(label: str, shape: tuple[int, ...], report, data: dict) -> str:
    pixel = f", pixel rule {report.pixel_rule}" if getattr(report, "pixel_rule", None) else ""
    lines = [f"{label}: {report.model}, preset {report.preset}{pixel}, input {'x'.join(map(str, shape))}",
             f"capture: {report.capture}, {report.nodes} nodes in the graph"]
    if report.forward_check:
        lines.append(f"forward: {report.forward_check}")
    lines += [f"note: {n}" for n in report.notes]
    counts = ", ".join(f"{family} {n}" for family, n in sorted(report.rewrites.items())) or "none"
    lines.append(f"rewrites: {counts}")
    lines.append(f"in all: {node_counts(report)}")
    lines.append("already complete: " + (", ".join(f"{k} {v}" for k, v in sorted(report.complete.items())) or "none")
                 + f"; no gradient after the rules: {report.pruned} nodes")
    if report.buckets:
        lines.append(report.buckets_line())
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
