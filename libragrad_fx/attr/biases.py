"""FullGrad's biases, found from the graph (docs/METHOD.md sections 1 and 5).

FullGrad-completeness reads f(x) = <grad~_x f, x> + sum_j <grad~_{b_j} f, b_j>. A bias b_j is a
constant (computed from parameters, buffers, literals and detached values only) that enters an
input-dependent stream additively: linear/conv biases, norm shifts, eval BatchNorm's
b - mean * w / sqrt(var + eps), positional embeddings, class and register tokens (a constant
part of a concatenation), literal offsets (``x + 1``), the constants of ``where``/``masked_fill``/
``pad``, a user's ``.detach()`` added to a stream, and f(0) of the identity rule. They are read
from the rewritten graph, never from parameter names: a *site* is a node on a gradient path
whose op takes a constant in one of its additive arguments (:data:`ADDITIVE`).

The bias that enters at a site is the site's op evaluated with its stream inputs set to zero.
That is exactly the constant for the ops of :data:`ADDITIVE`: each is affine in its streams under
the rewritten backward (a linear map plus the constant; a norm with its statistic frozen, whose
centred input is zero at zero), so f(0) holds the constant and nothing else. It is never a
remainder y - J~x: completeness has to come from the backward. Since y = sum_i J~_i x_i + b at
every site and every other node is locally complete, <grad~_y f, b> summed over the sites plus
<grad~_x f, x> telescopes to f(x); the per-node check in :mod:`libragrad_fx.attr.completeness` says
where that fails.

A rule that wraps a node (``scale_grad(x * y)``, ``identity_rule(x, softplus(x), f0, s)``) forms one
op with it (:func:`units`): its constant is the pair's, e.g. f(0) = log 2 for the identity rule on
softplus.
"""
from __future__ import annotations

import contextlib
import inspect
import numbers
import operator
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.fx as fx

from ..core import ops
from ..core.analysis import Analysis, Kind, live_nodes
from ..core.ops import Category, additive
from .taps import extend

__all__ = ["ADDITIVE", "BiasSite", "Biases", "units"]

ADDITIVE: dict[str, tuple[str, ...]] = {op.name: additive(op.name) for op in ops.entries() if additive(op.name)}
"""For each op that can take a bias: the arguments (by schema name) through which a constant enters
additively (the op registry's ``ADDITIVE`` role). Every op listed is affine in its streams under the
rewritten backward."""


@dataclass(frozen=True)
class BiasSite:
    """Where constants enter a stream: one node (a wrapped op counts as its rule's node)."""

    node: str
    """The node whose output the bias is part of."""
    op: str
    """The op, as the graph spells it."""
    constants: tuple[str, ...]
    """What enters: ``bias=blocks.0.attn.qkv.bias``, ``tensors[0]=cls_token``, ``other=1.0``..."""

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {', '.join(self.constants)}"


def units(gm: fx.GraphModule) -> dict[fx.Node, tuple[fx.Node, ...]]:
    """Last node -> the nodes that are one op with it (:meth:`Analysis.units`): a rule and the node
    it wraps (``scale_grad(x * y, 0.5)`` computes x * y in the forward and half its gradient in the
    backward: neither node alone is an op of the model, the pair is), a composite and its inner nodes."""
    return Analysis(gm).units()


def op_name(node: fx.Node, analysis: Analysis) -> str:
    """The canonical op name of a node (``linear``, ``libragrad.identity_rule``...)."""
    facts = analysis[node]
    return facts.op.name if facts.op is not None else node.op


def spelling(unit: tuple[fx.Node, ...], analysis: Analysis) -> str:
    """How the graph spells an op or a wrapped op (``F.softplus + identity_rule``)."""
    parts = []
    for node in unit:
        op = analysis[node].op
        parts.append(op.spelling if op is not None else node.op)
    return " + ".join(p.removeprefix("libragrad.") for p in parts)


def named_args(node: fx.Node, analysis: Analysis) -> dict[str, Any]:
    """Arguments by name: schema names for torch ops, parameter names for the rule functions."""
    if node.op == "call_function" and getattr(node.target, "__module__", "") == "libragrad_fx.core.rules":
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)
    facts = analysis[node]
    return dict(facts.op.args) if facts.op is not None else {}


class Biases:
    """The bias sites of a (transformed) GraphModule and a module that evaluates them.

    ``Biases(gm).module(*inputs)`` returns ``(output, values, constants)``: the model's output, the
    output of every site (differentiate the target with respect to these) and the bias that enters
    there (detached; shaped like its site's output, or broadcastable to it for a per-channel bias).
    ``Biases(gm).module_with(nodes)`` also returns the values of more nodes of ``gm`` after those,
    for callers that need them from the same forward. ``analysis``: an analysis of ``gm`` with the
    same inputs, if one exists already (it is not made again).
    """

    def __init__(self, gm: fx.GraphModule, input_names: Iterable[str] | None = None, *,
                 analysis: Analysis | None = None) -> None:
        self.gm = gm
        self.analysis = analysis if analysis is not None else Analysis(gm, input_names)
        self.units = self.analysis.units()
        self.live = live_nodes(self.analysis, []).live
        wrapped = {n for unit in self.units.values() for n in unit[:-1]}
        self._entries: list[tuple[tuple[fx.Node, ...], BiasSite]] = []
        for node in gm.graph.nodes:
            if node not in self.live or node in wrapped or not node.op.startswith("call"):
                continue
            unit = self.units.get(node, (node,))
            constants = self.constants(unit)
            if constants:
                self._entries.append((unit, BiasSite(node.name, spelling(unit, self.analysis), tuple(constants))))
        self.sites: list[BiasSite] = [site for _, site in self._entries]
        training = [u[-1].name for u, _ in self._entries if any(
            op_name(n, self.analysis) == "batch_norm" and self.analysis[n].category is Category.NORM for n in u)]
        if training:
            warnings.warn(f"BatchNorm in training mode at {', '.join(training)}: every forward updates its running "
                          "statistics, FullGrad's evaluation of its bias too; attribute a model in eval mode",
                          stacklevel=2)
        self._module: fx.GraphModule | None = None
        self.constant_nodes: dict[str, str] = {}
        """Site output name -> the node that holds its bias in :attr:`module` (and ``module_with``)."""
        self.outputs: list[str] = []
        """Site names in the order of ``values`` and ``constants`` (a tuple-valued site gives one entry
        per element it is read through: ``name[i]``)."""
        for (unit, site) in self._entries:
            self.outputs.extend(name for name, _ in self._readouts(unit[-1], site.node))

    # --- which constants enter where ------------------------------------------------------------
    def constants(self, unit: tuple[fx.Node, ...]) -> list[str]:
        """``name=source`` for every constant that enters the op ``unit`` additively."""
        found = []
        for node in unit:
            args = named_args(node, self.analysis)
            for name in additive(op_name(node, self.analysis)):
                if name == "running_mean" and self.analysis[node].category is Category.NORM:
                    continue  # train-mode BatchNorm normalises with the batch's mean, not the running one
                value = args.get(name)
                members = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
                for index, member in members:
                    label = name if index is None else f"{name}[{index}]"
                    source = self._constant(member, node, name, unit)
                    if source is not None:
                        found.append(f"{label}={source}")
        return found

    def _constant(self, value: Any, node: fx.Node, name: str, unit: tuple[fx.Node, ...]) -> str | None:
        """What ``value`` is if it is a constant that can be non-zero, else None."""
        if isinstance(value, fx.Node):
            if value in unit or self.analysis.kind(value) is not Kind.CONST:
                return None
            return _source(value, self.analysis)
        if isinstance(value, torch.Tensor):  # a module's own parameter or buffer
            return f"{node.target}.{name}" if node.op == "call_module" else "tensor"
        if isinstance(value, numbers.Number) and not isinstance(value, bool) and value != 0:
            return repr(value)
        return None

    # --- the module that evaluates them ---------------------------------------------------------
    @property
    def module(self) -> fx.GraphModule:
        """``module(*inputs) -> (output, values, constants)`` (compiled on first use)."""
        if self._module is None:
            self._module = self.module_with([])
        return self._module

    def module_with(self, extra: Iterable[fx.Node]) -> fx.GraphModule:
        """``module(*inputs) -> (output, values, constants, *extra values)``."""
        extra = list(extra)
        return extend(self.gm, lambda graph, env: self._build(graph, env) + [env[n] for n in extra])

    def watched_module(self, watch: Callable[[torch.Tensor, torch.Tensor, str], None],
                       extra: Iterable[fx.Node] = ()) -> fx.GraphModule:
        """``module(*inputs) -> (output, *extra values)`` that calls ``watch(value, bias, site name)`` as
        soon as each site's value and bias are computed, so that nothing keeps a site's value alive
        to the end of the forward (a caller registers gradient hooks there)."""
        extra = list(extra)
        module = extend(self.gm, lambda graph, env: self._build(graph, env, watch) + [env[n] for n in extra])
        module.graph.lint()  # the nodes inserted after each site come after everything they read
        return module

    def _build(self, graph: fx.Graph, env: dict[fx.Node, fx.Node],
               watch: Callable[[torch.Tensor, torch.Tensor, str], None] | None = None) -> list:
        """Nodes evaluating each site's bias: at the end of the graph, all returned (``watch`` None), or
        right after each site, handed to ``watch`` there."""
        zeros: dict[fx.Node, fx.Node] = {}

        def zero(node: fx.Node, fresh: bool) -> fx.Node:
            if fresh or watch is not None:  # an in-place op would write into a shared zero tensor; a
                # watched site's zeros must not live on to later sites
                return graph.call_function(torch.zeros_like, (env[node],))
            if node not in zeros:
                zeros[node] = graph.call_function(torch.zeros_like, (env[node],))
            return zeros[node]

        values, constants = [], []
        for unit, site in self._entries:
            here = graph.inserting_before(env[unit[-1]].next) if watch is not None else contextlib.nullcontext()
            with here:
                local: dict[fx.Node, fx.Node] = {}
                bias = self._channel_bias(unit, graph, env)
                if bias is not None:
                    local[unit[-1]] = bias
                for node in unit if bias is None else ():
                    streams = {a for _, a in self.analysis.dep_args(node) if a not in unit}
                    fresh = self.analysis[node].op is not None and self.analysis[node].op.inplace
                    local[node] = graph.node_copy(
                        node, lambda a, s=streams, f=fresh: local[a] if a in local else zero(a, f) if a in s
                        else env[a])
            for name, index in self._readouts(unit[-1], site.node):
                value, constant = env[unit[-1]], local[unit[-1]]
                if index is not None:
                    value = env[next(u for u in unit[-1].users if u.args[1] == index)]
                # after both the value and its bias: a tuple's elements come after the bias block (inserted
                # right after the site), a plain site's bias after its value
                later = value if index is not None else constant
                here = graph.inserting_before(later.next) if watch is not None else contextlib.nullcontext()
                with here:
                    if index is not None:
                        constant = graph.call_function(operator.getitem, (constant, index))
                    constant = graph.call_method("detach", (constant,))
                    if watch is not None:
                        graph.call_function(watch, (value, constant, name))
                        continue
                values.append(value)
                constants.append(constant)
                self.constant_nodes[name] = constant.name
        return [] if watch is not None else [tuple(values), tuple(constants)]

    def _channel_bias(self, unit: tuple[fx.Node, ...], graph: fx.Graph,
                      env: dict[fx.Node, fx.Node]) -> fx.Node | None:
        """A linear map's, convolution's or norm's bias, read as is, shaped to broadcast against the output.

        It is what the op gives at zero input, without running the op on zeros (the matmul of a
        zero-evaluation would cost as much as the layer's forward; a norm's would be a full-size
        tensor kept for FullGrad's backward where a vector of the channels' biases says the same)."""
        node = unit[-1]
        name = op_name(node, self.analysis)
        if len(unit) != 1 or name not in _CHANNEL_BIAS or self._readouts(node, node.name)[0][1] is not None:
            return None
        value = named_args(node, self.analysis).get("bias")
        if node.op == "call_module" and isinstance(value, torch.Tensor):
            bias = graph.get_attr(f"{node.target}.bias")
        elif isinstance(value, fx.Node):
            bias = env[value]
        else:
            return None
        return graph.call_function(_CHANNEL_BIAS[name], (bias, env[node]))

    @staticmethod
    def _readouts(node: fx.Node, name: str) -> list[tuple[str, int | None]]:
        """A tuple-valued op (ATen's native norms) is read through its ``getitem`` users."""
        users = list(node.users)
        if users and all(u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int)
                         for u in users):
            return [(f"{name}[{i}]", i) for i in sorted({u.args[1] for u in users})]
        return [(name, None)]


def trailing_bias(bias: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """linear(0, W, b) = b, broadcast over the output's leading dimensions (layer_norm(0, w, b) too: the
    centred input is zero, whatever the frozen statistic)."""
    return bias


def channel_bias(bias: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """conv(0, W, b) = b on every position of each channel: b shaped [C, 1, ...] against [B, C, ...]
    (group_norm(0, w, b) too)."""
    return bias.reshape(-1, *[1] * (output.dim() - 2))


_CHANNEL_BIAS = {"linear": trailing_bias, "conv": channel_bias, "conv_transpose": channel_bias,
                 "layer_norm": trailing_bias, "libragrad.layer_norm": trailing_bias,
                 "group_norm": channel_bias, "libragrad.group_norm": channel_bias}


def _source(node: fx.Node, analysis: Analysis, limit: int = 3) -> str:
    """What a constant is made of: the parameters and buffers it is computed from (``cls_token``),
    a detached value (``detach_2 (detached)``), else its node's name."""
    found, stack, seen = [], [node], set()
    while stack and len(found) < limit:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "get_attr":
            found.append(str(n.target))
        elif analysis[n].category is Category.DETACH:
            found.append(f"{n.name} (detached)")
        else:
            stack.extend(reversed(n.all_input_nodes))
    return ", ".join(found) if found else node.name
