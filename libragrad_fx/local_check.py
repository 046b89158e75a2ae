"""Which node breaks completeness: a node-by-node check of the rewritten backward.

LIBRAGRAD.md section 1: after the rewrite every op must be *locally complete*,

    y = sum_i J~_i x_i + r,    r depending on constants only,

where J~_i is the (rewritten) local Jacobian for the input-dependent operand x_i. For one node
and a random cotangent v, autograd gives <x_i, J~_i^T v> for each operand, so

    <r, v> = <y, v> - sum_i <x_i, vjp_i(v)>

is computable node by node. A locally complete node has the *same* <r, v> on two different model
inputs (r is a bias, possibly zero); a node whose residual moves with the input is where
completeness breaks (an unrewritten GELU, a gate added to a stream, a product not balanced).
A node's rule wrapper (``scale_grad``, ``gated``, ``identity_rule``, ...) is checked together with it.

The check runs the graph itself (an :class:`torch.fx.Interpreter`), independent of the analysis
that planned the rewrite. Input dependence is read from autograd: parameters and buffers are
constants (their ``requires_grad`` is switched off during the check and restored after).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.fx as fx

from . import rules
from .spelling import describe

__all__ = ["NodeResidual", "local_completeness"]


@dataclass(frozen=True)
class NodeResidual:
    """One node's local residual <r, v> on two inputs; ``drift`` is their difference, relative."""

    node: str
    op: str
    module: str
    """The model's module the node comes from (``nn_module_stack``), if known."""
    residual: tuple[float, float]
    drift: float

    @property
    def complete(self) -> bool:
        return self.drift <= _RTOL

    def __str__(self) -> str:
        where = f" in {self.module}" if self.module else ""
        return f"{self.node} ({self.op}{where}): local residual moves with the input (drift {self.drift:.2e})"


_RTOL = 1e-6


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps every node's value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)


@contextlib.contextmanager
def _constant_parameters(gm: torch.nn.Module) -> Iterator[None]:
    """Parameters are constants here: only the model input makes a value input-dependent."""
    flags = [(p, p.requires_grad) for p in gm.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _differentiable(t: torch.Tensor) -> bool:
    return t.requires_grad and (t.is_floating_point() or t.is_complex())


def _module_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, _ = list(stack.values())[-1]
        return str(path)
    return str(node.target) if node.op == "call_module" else ""


def _op_name(node: fx.Node, gm: fx.GraphModule) -> str:
    try:
        op = describe(node, gm)
    except Exception:  # a node the op table cannot read: its target says enough
        op = None
    return op.spelling if op is not None else str(node.target)


def _wrapper(node: fx.Node) -> fx.Node | None:
    """The rule function that wraps ``node`` (``scale_grad(node, k)``, ``gated(x, node, g)``)."""
    for user in node.users:
        position = rules.WRAPPED_ARG.get(user.target) if user.op == "call_function" else None
        if position is not None and len(user.args) > position and user.args[position] is node:
            return user
    return None


_SHAPE_READS = frozenset({"size", "dim", "shape", "numel", "sym_size", "stride"})


def _bypassed(node: fx.Node, wrapper: fx.Node) -> bool:
    """Does a user other than the rule wrapper read ``node``'s value (and so miss the rule)?"""
    for user in node.users:
        if user is wrapper:
            continue
        target = user.target if user.op == "call_method" else getattr(user.target, "__name__", "")
        if target == "getattr" and user.args[1:] and user.args[1] in _SHAPE_READS:
            continue
        if target in _SHAPE_READS or str(target).startswith("aten.sym_"):
            continue
        return True
    return False


def _execute(node: fx.Node, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> Any:
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        self_, *rest = args
        return getattr(self_, node.target)(*rest, **kwargs)
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    raise ValueError(f"cannot execute node {node.name} ({node.op})")


def _unit_residual(unit: Sequence[fx.Node], gm: fx.GraphModule, env: dict[fx.Node, Any],
                   cotangents: list[torch.Tensor]) -> tuple[float, float] | None:
    """(<r, v>, a scale for it) for the nodes of ``unit`` run in order on fresh leaf operands."""
    values: dict[fx.Node, Any] = {}
    leaves: list[torch.Tensor] = []
    inside = set(unit)
    for member in unit:
        for arg in member.all_input_nodes:
            if arg in inside or arg in values:
                continue
            value = env[arg]
            if isinstance(value, torch.Tensor) and _differentiable(value):
                leaf = value.detach().clone().requires_grad_(True)
                leaves.append(leaf)
                values[arg] = leaf.clone()  # a clone: in-place ops must not touch the leaf
            elif isinstance(value, torch.Tensor):
                values[arg] = value.clone()
            else:
                values[arg] = value
    if not leaves:
        return None
    for member in unit:
        values[member] = _execute(member, gm, values)
    outputs = [t for t in _tensors(values[unit[-1]])]
    pairs = [(y, v) for y, v in zip(outputs, cotangents) if _differentiable(y)]
    if not pairs:
        return None
    # a padding of -inf (for a max-pool) is a constant with no gradient: keep it out of the sums
    pairs = [(torch.where(y.detach().isfinite(), y, torch.zeros_like(y)), v) for y, v in pairs]
    total = sum((y * v).sum() for y, v in pairs)
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    terms = [torch.where(g != 0, leaf.detach() * g, torch.zeros_like(g)) for leaf, g in zip(leaves, grads)
             if g is not None]
    # the rounding of a float sum is relative to the sum of magnitudes, not to the sum itself
    scale = sum(float((y.detach() * v).abs().sum()) for y, v in pairs) + sum(float(t.abs().sum()) for t in terms)
    return float(total.detach()) - sum(float(t.sum()) for t in terms), scale


def _live(env: dict[fx.Node, Any], nodes: list[fx.Node], output: Any, seed: int) -> set[fx.Node]:
    """Nodes some output gradient reaches (a node on a detached score path is not checked)."""
    outs = [t for t in _tensors(output) if _differentiable(t)]
    candidates = [(n, t) for n in nodes for t in _tensors(env.get(n)) if _differentiable(t)]
    if not outs or not candidates:
        return set()
    generator = torch.Generator().manual_seed(seed)
    total = sum((o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(total, [t for _, t in candidates], allow_unused=True)
    return {n for (n, _), g in zip(candidates, grads) if g is not None}


def _in_precision(gm: fx.GraphModule, dtype: torch.dtype) -> fx.GraphModule:
    """A copy of ``gm`` in ``dtype``: parameters, buffers, and the float32 an exported graph bakes
    into its factories and casts (``aten.zeros(..., dtype=torch.float32)``)."""
    gm = copy.deepcopy(gm).to(dtype)
    for module in gm.modules():
        if isinstance(module, fx.GraphModule):
            for node in module.graph.nodes:
                node.args, node.kwargs = fx.node.map_aggregate(
                    (node.args, node.kwargs), lambda a: dtype if a is torch.float32 else a)
            module.recompile()
    return gm


def local_completeness(gm: fx.GraphModule, inputs: Sequence[Any], other_inputs: Sequence[Any],
                       seed: int = 0, dtype: torch.dtype | None = torch.float64) -> list[NodeResidual]:
    """Every live node's local residual on two inputs; ``[r for r in result if not r.complete]``
    are the nodes where completeness breaks.

    Args:
        gm: a transformed graph (or any GraphModule: on an untransformed one, every nonlinear op
            shows up).
        inputs, other_inputs: two sets of positional model inputs of the same shapes.
        seed: seeds the random cotangents (the same on both inputs).
        dtype: run the check on a copy in this precision (default float64: a float32 sum over a
            wide layer rounds at 1e-4 of its magnitudes); ``None`` checks ``gm`` itself.
    """
    if dtype is not None:
        gm = _in_precision(gm, dtype)
        inputs, other_inputs = ([a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                                 for a in args] for args in (inputs, other_inputs))
    nodes = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    wrapped = {w: n for n in nodes if (w := _wrapper(n)) is not None}
    runs = []
    with _constant_parameters(gm):
        for args in (inputs, other_inputs):
            args = tuple(a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor)
                         and a.is_floating_point() else a for a in args)
            recorder = _Recorder(gm)
            output = recorder.run(*args)
            runs.append((recorder.env, _live(recorder.env, nodes, output, seed)))
        results = []
        for index, node in enumerate(nodes):
            wrapper = _wrapper(node)
            # gated(x, y, g) takes y's value but no gradient through y: the wrapper says if it is live
            if node in wrapped or not any(node in live or wrapper in live for _, live in runs):
                continue
            units = [[node, wrapper]] if wrapper is not None else []
            if wrapper is None or _bypassed(node, wrapper):
                units.append([node])  # some user reads the node itself: it must be complete alone
            for unit in units:
                generator = torch.Generator().manual_seed(seed + index)
                first = _tensors(runs[0][0][unit[-1]])
                cotangents = [torch.randn(t.shape, generator=generator, dtype=t.dtype)
                              if t.is_floating_point() else torch.zeros(()) for t in first]
                measured = [_unit_residual(unit, gm, env, cotangents) for env, _ in runs]
                if any(m is None for m in measured):
                    continue
                (r1, s1), (r2, s2) = measured
                drift = abs(r1 - r2) / max(s1, s2, 1e-30)
                results.append(NodeResidual(node.name, _op_name(node, gm), _module_of(node), (r1, r2), drift))
    return results
