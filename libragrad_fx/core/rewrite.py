"""Apply the passes' edits to a graph (see :mod:`libragrad_fx.passes` for the three kinds).

Detaches are inserted right after their source, once per source, and replace exactly the
argument the rule names (``sdpa(x, x, x)`` loses the gradient of its query and key, not of its
value). Wraps go right after the wrapped node and take over its uses. Replacements take the
node's place; an in-place op becomes out-of-place, and later readers of the mutated tensor read
the new value instead, which is what they read before.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.fx as fx

from libragrad_fx.passes import SELF, Detach, Edit, ParamRef, Replace, Scale, Wrap

from . import ops
from .rules import factor_grad
from .spelling import describe, is_aten

__all__ = ["apply_edits", "RULE_META", "ORIGIN_META"]

RULE_META = "libragrad_rule"
ORIGIN_META = "libragrad_for"
"""Names of the original nodes whose rewrite an inserted node implements (what ``diff`` groups by)."""


class _Rewriter:
    """Applies edits in order: detaches, then wraps, then replacements.

    Edits name nodes as they were when planned; a node replaced since (a LayerNorm whose input
    was the LayerNorm before it) is looked up in ``self.moved``. A node wrapped since (a train-mode
    BatchNorm whose output feeds a GELU that is replaced later) is read through its rule
    (``self.wrapped``) wherever an edit takes it as an argument.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.moved: dict[fx.Node, fx.Node] = {}
        self.wrapped: dict[fx.Node, fx.Node] = {}
        self.detached: dict[tuple[fx.Node, bool], fx.Node] = {}
        self.attrs: dict[str, fx.Node] = {}

    def current(self, value: Any) -> Any:
        while isinstance(value, fx.Node) and value in self.moved:
            value = self.moved[value]
        return value

    def resolve(self, value: Any, node: fx.Node) -> Any:
        if value is SELF:
            return node
        if isinstance(value, ParamRef):
            if value not in self.attrs:
                with self.graph.inserting_before(node):
                    self.attrs[value] = self.graph.get_attr(str(value))
            return self.attrs[value]
        if isinstance(value, (list, tuple)):
            return type(value)(self.resolve(v, node) for v in value)
        value = self.current(value)
        while isinstance(value, fx.Node) and value in self.wrapped:
            value = self.wrapped[value]
        return value


def apply_edits(gm: fx.GraphModule, edits: Iterable[Edit]) -> None:
    edits = list(edits)
    rewriter = _Rewriter(gm)
    for edit in edits:
        if isinstance(edit, Detach):
            _detach(rewriter, edit)
    for edit in edits:
        if isinstance(edit, Scale):
            _scale(rewriter, edit)
    for edit in edits:
        if isinstance(edit, Wrap):
            _wrap(rewriter, edit)
    for edit in edits:
        if isinstance(edit, Replace):
            _replace(rewriter, edit)
    gm.graph.lint()
    gm.recompile()


def _mark(node: fx.Node, edit: Edit) -> None:
    node.meta[RULE_META] = (edit.family, edit.rule)
    origins = node.meta.get(ORIGIN_META, [])
    node.meta[ORIGIN_META] = origins if edit.node.name in origins else [*origins, edit.node.name]
    # torch.export carries meta["custom"] onto its nodes and through save/load: an exported
    # program still says which node applies which rule
    node.meta["custom"] = {**node.meta.get("custom", {}), RULE_META: [edit.family, edit.rule]}


def _detach(rw: _Rewriter, edit: Detach) -> None:
    graph, gm, cache = rw.graph, rw.gm, rw.detached
    source, consumer = rw.current(edit.cut.source), rw.current(edit.cut.consumer)
    aten = is_aten(consumer.target)
    key = (source, aten)
    if key not in cache:
        with graph.inserting_after(source):
            if aten:
                node = graph.call_function(torch.ops.aten.detach.default, (source,))
            else:
                node = graph.call_method("detach", (source,))
        node.meta.update({k: v for k, v in source.meta.items() if k in ("stack_trace", "nn_module_stack", "val")})
        cache[key] = node
    _mark(cache[key], edit)  # a shared detach serves every consumer's rule
    _set_argument(gm, consumer, edit.cut.arg, source, cache[key])


def _scale(rw: _Rewriter, edit: Scale) -> None:
    """``factor_grad(source, scale)`` on one argument of one consumer (a product term's factor)."""
    source, consumer = rw.current(edit.cut.source), rw.current(edit.cut.consumer)
    with rw.graph.inserting_before(consumer):
        node = rw.graph.call_function(factor_grad, (source, edit.scale))
    node.meta.update({k: v for k, v in source.meta.items() if k in ("stack_trace", "nn_module_stack", "val")})
    _mark(node, edit)
    _set_argument(rw.gm, consumer, edit.cut.arg, source, node)


def _set_argument(gm: fx.GraphModule, node: fx.Node, name: str, old: fx.Node, new: fx.Node) -> None:
    """Point argument ``name`` of ``node`` (a schema name, ``operands[1]`` for lists) at ``new``."""
    base, _, rest = name.partition("[")
    index = int(rest[:-1]) if rest else None
    op = describe(node, gm)
    names = list(op.args) if op is not None else []
    if base in node.kwargs or (base == "input" and "self" in node.kwargs):
        key = base if base in node.kwargs else "self"
        node.update_kwarg(key, _swap(node.kwargs[key], index, old, new))
        return
    if node.op == "call_module":
        position = 0 if base == "input" else int(base[3:]) if base.startswith("arg") else None
    elif op is not None and op.name == "einsum" and base == "operands":
        listed = len(node.args) == 2 and isinstance(node.args[1], (list, tuple))
        position, index = (1, index) if listed else (1 + index, None)
    elif base in names and names.index(base) < len(node.args):
        position = names.index(base)
    else:
        position = None
    if position is None or position >= len(node.args):
        node.replace_input_with(old, new)  # a single occurrence: nothing to disambiguate
        return
    node.update_arg(position, _swap(node.args[position], index, old, new))


def _swap(value: Any, index: int | None, old: fx.Node, new: fx.Node) -> Any:
    if index is None:
        return new if value is old else value
    items = list(value)
    items[index] = new if items[index] is old else items[index]
    return type(value)(items)


def _wrap(rw: _Rewriter, edit: Wrap) -> None:
    graph, gm = rw.graph, rw.gm
    node = rw.current(edit.node)
    op = describe(node, gm)
    if op is not None and op.inplace:
        new_node = out_of_place(graph, gm, node, op)
        rw.moved[node] = new_node
        node = new_node
    args = tuple(rw.resolve(a, node) for a in edit.args)
    with graph.inserting_after(node):
        new = graph.call_function(edit.fn, args)
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    rw.wrapped[node] = new
    new.meta.update({k: v for k, v in node.meta.items() if k in ("stack_trace", "nn_module_stack", "val")})
    _mark(new, edit)


def _replace(rw: _Rewriter, edit: Replace) -> None:
    graph, gm = rw.graph, rw.gm
    node = rw.current(edit.node)
    op = describe(node, gm)
    args = tuple(rw.resolve(a, node) for a in edit.args)
    with graph.inserting_before(node):
        new = graph.call_function(edit.target, args, dict(edit.kwargs))
    new.meta.update({k: v for k, v in node.meta.items() if k in ("stack_trace", "nn_module_stack", "val")})
    if op is not None and op.inplace and isinstance(op.input, fx.Node):
        _redirect_later_readers(graph, op.input, node, new)
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    rw.moved[node] = new
    _mark(new, edit)


# nn.Module type -> (function, settings): how an in-place module call is lowered to its function
_MODULE_FUNCTIONS = {module: (op.functional, op.modules[module]) for op in ops.entries() if op.functional is not None
                     for module in op.modules}


def out_of_place(graph: fx.Graph, gm: fx.GraphModule, node: fx.Node, op) -> fx.Node:
    """The same op without mutation; the user's modules are left as they are."""
    x = op.input
    if node.op == "call_module":
        function, settings = _MODULE_FUNCTIONS[type(op.module)]
        with graph.inserting_before(node):
            new = graph.call_function(function, (x, *(getattr(op.module, s) for s in settings)))
    elif node.op == "call_method":
        with graph.inserting_before(node):
            new = graph.call_method(node.target[:-1], node.args, dict(node.kwargs))
    elif is_aten(node.target):
        packet = getattr(torch.ops.aten, node.target._opname[:-1])
        with graph.inserting_before(node):
            new = graph.call_function(getattr(packet, node.target._overloadname), node.args, dict(node.kwargs))
    else:
        kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
        names = list(op.args)
        args = tuple(False if i < len(names) and names[i] == "inplace" else a for i, a in enumerate(node.args))
        with graph.inserting_before(node):
            new = graph.call_function(node.target, args, kwargs)
    new.meta.update(node.meta)
    _redirect_later_readers(graph, x, node, new)
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return new


def _redirect_later_readers(graph: fx.Graph, mutated: fx.Node, at: fx.Node, new: fx.Node) -> None:
    """After ``y = f_(x)``, x holds y: readers of x that come later must read the new node."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for user in list(mutated.users):
        if user is not at and user is not new and order[user] > order[at]:
            user.replace_input_with(mutated, new)
