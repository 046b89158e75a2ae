"""Graphs inside graphs: inline the body of an autocast region so the passes see its ops.

``torch.export`` turns ``with torch.autocast(..., enabled=False):`` (efficientvit's LiteMLA keeps
its linear attention in float32 that way) into a higher-order op, ``wrap_with_autocast``, whose
body is a nested GraphModule: one opaque node to the passes, with the attention inside. A region
that *disables* autocast computes exactly its body when the model runs without autocast, which is
how the transform verifies it; it is inlined, and the report says so (under an outer autocast the
inlined ops would now follow it). Regions that enable autocast are left whole, and reported.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

__all__ = ["inline_autocast_regions"]


def _is_autocast_region(node: fx.Node) -> bool:
    return node.op == "call_function" and isinstance(node.target, torch._ops.HigherOrderOperator) \
        and node.target.name() == "wrap_with_autocast"


def inline_autocast_regions(gm: fx.GraphModule) -> list[str]:
    """Inline every ``wrap_with_autocast(..., enabled=False, ...)`` body into ``gm``; returns notes."""
    notes = []
    graph = gm.graph
    for node in list(graph.nodes):
        if not _is_autocast_region(node):
            continue
        device, _, enabled, _, body_attr, *operands = node.args
        if enabled:
            notes.append(f"{node.name}: an autocast region (enabled) is kept whole: its ops are not rewritten")
            continue
        body: fx.GraphModule = gm.get_submodule(body_attr.target)
        env: dict[fx.Node, Any] = {}
        placeholders = iter(operands)
        outputs: Any = None
        with graph.inserting_before(node):
            for inner in body.graph.nodes:
                if inner.op == "placeholder":
                    env[inner] = next(placeholders)
                elif inner.op == "output":
                    outputs = fx.node.map_arg(inner.args[0], lambda n: env[n])
                elif inner.op == "get_attr":
                    env[inner] = graph.get_attr(f"{body_attr.target}.{inner.target}")
                else:
                    env[inner] = graph.node_copy(inner, lambda n: env[n])
        for user in list(node.users):
            user.replace_all_uses_with(outputs[user.args[1]])
            graph.erase_node(user)
        graph.erase_node(node)
        if not body_attr.users:
            graph.erase_node(body_attr)
        notes.append(f"{node.name}: autocast(device_type={device!r}, enabled=False) region inlined, so the "
                     "passes see its ops (under an outer torch.autocast they would now follow it)")
    if notes:
        graph.lint()
        gm.recompile()
    return notes
