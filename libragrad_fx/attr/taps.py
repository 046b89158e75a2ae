"""Read intermediate values out of a GraphModule by compiling a copy of its graph that returns them.

Attribution methods need values the model does not return: a layer's activations (CAM), the
attention inputs (rollout), the nodes where biases enter and those biases' values (FullGrad).
:func:`extend` copies the graph, lets a builder append nodes to the copy and returns a
GraphModule whose forward returns ``(model output, *extra)``. The copy shares every parameter,
buffer and submodule with the original; the original graph is not touched. Being a compiled
graph (not an interpreter), it costs what the extra nodes cost, nothing more.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable, Sequence

import torch.fx as fx
from torch.utils import _pytree as pytree

if TYPE_CHECKING:
    from ..core.analysis import Analysis

__all__ = ["extend", "tap", "find_layer", "module_path", "patch_embedding", "gradient_paths", "blocks"]

Builder = Callable[[fx.Graph, dict[fx.Node, fx.Node]], Sequence]
"""``builder(graph, env)``: appends nodes to ``graph`` (``env`` maps each original node to its
copy) and returns the extra values to output (nodes, or nested lists/tuples of nodes)."""


def extend(gm: fx.GraphModule, builder: Builder) -> fx.GraphModule:
    """A GraphModule computing what ``gm`` computes and returning ``(output, *builder(...))``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    output = graph.graph_copy(gm.graph, env)
    _out_of_place(graph, gm, env)
    extra = builder(graph, env)
    info = getattr(gm.graph._codegen, "pytree_info", None)
    if info is not None and info.out_spec is not None:
        # torch.export's modules return flat outputs that their codegen re-packs: re-pack ours too
        flat = list(output) if isinstance(output, (list, tuple)) else [output]
        leaves, spec = pytree.tree_flatten((pytree.tree_unflatten(flat, info.out_spec), *extra))
        graph.output(tuple(leaves))
        graph._codegen = type(gm.graph._codegen)(info._replace(out_spec=spec))
    else:
        graph.output((output, *extra))
        graph._codegen = copy.copy(gm.graph._codegen)
    out = fx.GraphModule(gm, graph, f"{type(gm).__name__}Tapped")
    if hasattr(gm, "_in_spec"):  # torch.export's modules flatten their inputs with it
        out._in_spec = gm._in_spec
    return out


def _out_of_place(graph: fx.Graph, gm: fx.GraphModule, env: dict[fx.Node, fx.Node]) -> None:
    """Make the copy's in-place ops out-of-place (``ReLU(inplace=True)`` after a BatchNorm): a tapped
    value must be the value at its node, not what a later op wrote into the same tensor, and the
    gradient taken with respect to it must be that node's."""
    from ..core.rewrite import _MODULE_FUNCTIONS, out_of_place
    from ..core.spelling import describe

    copies = {copy_: original for original, copy_ in env.items()}
    for node in list(graph.nodes):
        if not node.op.startswith("call"):
            continue
        op = describe(node, gm)
        if op is None or not op.inplace or not isinstance(op.input, fx.Node):
            continue
        if node.op == "call_module" and type(op.module) not in _MODULE_FUNCTIONS:
            continue  # no functional form known: left as it is
        name = node.name
        new = out_of_place(graph, gm, node, op)
        # callers find the copy's nodes by the original's names; the erased node's name is free again
        new.name = name
        graph._graph_namespace._rename_object(new, name)
        if node in copies:
            env[copies[node]] = new


def tap(gm: fx.GraphModule, nodes: Sequence[fx.Node]) -> fx.GraphModule:
    """``gm`` that also returns the values of ``nodes``: ``(output, value_0, value_1, ...)``."""
    return extend(gm, lambda graph, env: [env[n] for n in nodes])


def module_path(node: fx.Node) -> str:
    """The path of the innermost module whose forward made ``node`` ("" for the model itself)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return str(node.target) if node.op == "call_module" else ""
    path = list(stack.values())[-1][0]
    return str(path)


def _in_module(node: fx.Node, path: str) -> bool:
    if node.op == "call_module" and (node.target == path or str(node.target).startswith(path + ".")):
        return True
    stack = node.meta.get("nn_module_stack") or {}
    return any(str(p) == path or str(p).startswith(path + ".") for p, _ in stack.values())


def find_layer(gm: fx.GraphModule, layer: str | None, candidates: set[fx.Node] | None = None) -> fx.Node:
    """The node named ``layer``, or the output of the module at path ``layer`` (its last node), or,
    for None, the output of the last block (:func:`blocks`).

    ``candidates`` restricts the choice (e.g. to nodes on a gradient path).
    """
    nodes = [n for n in gm.graph.nodes if n.op.startswith("call") and (candidates is None or n in candidates)]
    if layer is None:
        found = blocks(gm, candidates)
        if not found:
            raise ValueError("no numbered blocks (blocks.0, blocks.1...) in the model: pass layer= a module "
                             "path or a node name")
        layer = found[-1]
    by_name = [n for n in nodes if n.name == layer]
    if by_name:
        return by_name[0]
    inside = [n for n in nodes if _in_module(n, layer)]
    if not inside:
        raise ValueError(f"no node or module named {layer!r} on the model's gradient path; module paths "
                         f"look like {_example_paths(nodes)}")
    return inside[-1]


def blocks(gm: fx.GraphModule, candidates: set[fx.Node] | None = None) -> list[str]:
    """The model's blocks in order: ``prefix.0``, ``prefix.1``... for the container ``prefix`` with the
    most numbered children (the outermost on a tie)."""
    children: dict[str, set[int]] = {}
    for node in gm.graph.nodes:
        if candidates is not None and node not in candidates:
            continue
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            parts = str(path).split(".")
            for i, part in enumerate(parts):
                if part.isdigit():
                    children.setdefault(".".join(parts[:i]), set()).add(int(part))
    if not children:
        return []
    prefix = max(children, key=lambda p: (len(children[p]), -p.count(".")))
    return [f"{prefix}.{i}" if prefix else str(i) for i in sorted(children[prefix])]


def _example_paths(nodes: Sequence[fx.Node]) -> str:
    paths = []
    for node in nodes:
        path = module_path(node)
        if path and path not in paths:
            paths.append(path)
    return ", ".join(paths[:4]) + (", ..." if len(paths) > 4 else "")


def gradient_paths(gm: fx.GraphModule, n_inputs: int) -> tuple[Analysis, frozenset]:
    """The analysis of ``gm`` (its first ``n_inputs`` placeholders are the inputs) and the nodes on a
    path from an input to the output."""
    from ..core.analysis import Analysis, live_nodes

    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"][:n_inputs]
    analysis = Analysis(gm, names)
    return analysis, live_nodes(analysis, []).live


def patch_embedding(gm: fx.GraphModule, analysis: Analysis, live: frozenset) -> fx.Node | None:
    """The first convolution on a gradient path (a vision model's patch embedding or stem): its
    output's spatial size is the grid token sequences are laid out on."""
    from ..core.analysis import Kind

    for node in gm.graph.nodes:
        facts = analysis.facts.get(node)
        if node in live and facts is not None and facts.op is not None and facts.op.name == "conv" \
                and facts.kind is Kind.STREAM:
            return node
    return None
