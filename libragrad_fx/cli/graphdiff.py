"""What the transform changed: the generated code, line by line, and a summary per original node.

``before`` is the graph as captured (the ``vanilla`` preset), ``after`` the transformed one; both come
from the same capture, so unchanged nodes keep their names. Every node the rewriter inserts records
the original nodes whose rule it implements (``rewrite.ORIGIN_META``), which is what groups the
summary: an original node, its rule, and the lines that now implement it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch.fx as fx

from ..core.rewrite import ORIGIN_META, RULE_META
from ..core.spelling import describe

__all__ = ["NodeChange", "node_changes", "code_diff"]


@dataclass
class NodeChange:
    node: str
    """The original node whose gradient the rule changes."""
    op: str
    family: str
    rule: str
    removed: list[str] = field(default_factory=list)
    """Lines of the original code that are gone (a replaced op)."""
    added: list[str] = field(default_factory=list)
    """Lines of the transformed code that implement the rule (inserted nodes, the rewired node)."""

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "family": self.family, "rule": self.rule,
                "removed": self.removed, "added": self.added}


def _lines(gm: fx.GraphModule) -> dict[str, str]:
    """Each node's line of generated code, keyed by the name it assigns (cleanup ``x = None`` dropped)."""
    out = {}
    for line in gm.code.splitlines():
        text = line.strip()
        name, sep, _ = text.partition(" = ")
        if sep and name.isidentifier():
            out[name] = text.split(";  ")[0]
    return out


def _op(node: fx.Node, gm: fx.GraphModule) -> str:
    op = describe(node, gm)
    return op.spelling if op is not None else node.op


def node_changes(before: fx.GraphModule, after: fx.GraphModule) -> list[NodeChange]:
    """One entry per original node a rule touched, in graph order, with the code lines that changed."""
    old_nodes = {n.name: n for n in before.graph.nodes}
    new_nodes = {n.name: n for n in after.graph.nodes}
    old_lines, new_lines = _lines(before), _lines(after)
    changes: dict[str, NodeChange] = {}
    inserted: dict[str, set[str]] = {}
    for node in after.graph.nodes:
        if RULE_META not in node.meta:
            continue
        family, rule = node.meta[RULE_META]
        for origin in node.meta.get(ORIGIN_META, [node.name]):
            change = changes.get(origin)
            if change is None:
                source = old_nodes.get(origin)
                change = changes[origin] = NodeChange(origin, _op(source, before) if source is not None else "?",
                                                      family, rule)
                if origin not in new_nodes and origin in old_lines:
                    change.removed.append(old_lines[origin])
            elif rule not in change.rule.split("; "):
                change.rule += f"; {rule}"
            if node.name in new_lines and new_lines[node.name] not in change.added:
                change.added.append(new_lines[node.name])
            inserted.setdefault(origin, set()).add(node.name)
    for change in changes.values():
        # a node kept in place that now reads this rule's nodes (a detached query): its new line last
        kept = new_nodes.get(change.node)
        if kept is not None and {n.name for n in kept.all_input_nodes} & inserted[change.node]:
            change.removed.append(old_lines[change.node])
            change.added.append(new_lines[change.node])
    order = {n.name: i for i, n in enumerate(before.graph.nodes)}
    return sorted(changes.values(), key=lambda c: order.get(c.node, len(order)))


def code_diff(before: fx.GraphModule, after: fx.GraphModule, context: int = 1, label: str = "model") -> str:
    """A unified diff of the generated Python code."""
    return "".join(difflib.unified_diff(before.code.splitlines(True), after.code.splitlines(True),
                                        f"{label} (captured)", f"{label} (libragrad)", n=context))
