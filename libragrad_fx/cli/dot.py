"""The transformed graph as Graphviz DOT text, rewritten nodes filled with their family's colour.

Plain DOT text (``dot -Tsvg graph.dot``): no Graphviz binding is needed to write it.
"""
from __future__ import annotations

import torch.fx as fx

from ..core.report import Report
from ..core.rewrite import RULE_META
from ..core.spelling import describe

__all__ = ["to_dot", "FAMILY_COLORS"]

FAMILY_COLORS = {
    "attention": "#8dd3c7",
    "normalization": "#ffed6f",
    "nonlinearity": "#bebada",
    "gating": "#fb8072",
    "head": "#d9d9d9",
    "pruning": "#80b1d3",
}
_UNCLASSIFIED = "#e31a1c"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def node_rule(node: fx.Node) -> tuple[str, str] | None:
    """(family, rule) of a node the rewriter inserted, also read from an exported program's ``custom`` meta."""
    rule = node.meta.get(RULE_META) or node.meta.get("custom", {}).get(RULE_META)
    return tuple(rule) if rule else None


def to_dot(gm: fx.GraphModule, report: Report | None = None, title: str = "") -> str:
    """DOT for ``gm``: inserted nodes and the nodes whose rule they implement coloured by family,
    unclassified ops outlined in red, a legend of the families present."""
    touched = {r.node: r.family for r in (report.backward + report.rewritten if report else [])}
    touched.update({h.node: "head" for h in (report.head if report else [])})
    unclassified = {u.node for u in (report.unclassified if report else [])}
    used: set[str] = set()
    lines = ["digraph libragrad {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")
    for node in gm.graph.nodes:
        op = describe(node, gm)
        label = f"{node.name}\n{op.spelling if op is not None else node.op}"
        attrs = {"label": label}
        rule = node_rule(node)
        family = rule[0] if rule else touched.get(node.name)
        if family:
            used.add(family)
            attrs.update(style="filled", fillcolor=FAMILY_COLORS.get(family, "#ffffff"))
            if rule:
                attrs["tooltip"] = f"{rule[0]}: {rule[1]}"
        if node.name in unclassified:
            attrs.update(color=_UNCLASSIFIED, penwidth="2")
            used.add("unclassified")
        if node.op in ("placeholder", "get_attr", "output"):
            attrs["shape"] = "ellipse"
        lines.append(f"  {_quote(node.name)} [" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items()) + "];")
    for node in gm.graph.nodes:
        for source in node.all_input_nodes:
            lines.append(f"  {_quote(source.name)} -> {_quote(node.name)};")
    if used:
        lines.append("  subgraph cluster_legend {")
        lines.append('    label="families"; fontsize=10;')
        for family in sorted(used):
            style = (f'style=filled, fillcolor="{FAMILY_COLORS[family]}"' if family in FAMILY_COLORS
                     else f'color="{_UNCLASSIFIED}", penwidth=2')
            lines.append(f'    "legend_{family}" [label="{family}", {style}];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
