"""Is an attribution complete, and where does completeness break? (LIBRAGRAD.md sections 1 and 4)

:func:`completeness` compares, per sample, what a method attributes with what it should sum to:
f_t(x) for FullGrad and Input x Gradient, f_t(x) - f_t(x') for Integrated Gradients.

:func:`node_completeness` says *where* it breaks. Every op on a gradient path must be locally
complete under the backward the model runs:

    y = sum_i J~_i x_i + b        (x_i: its input-dependent operands; b: its bias, or 0)

with J~_i the Jacobians its backward implements and b the bias found from the graph
(:mod:`libragrad_fx.attr.biases`). The check runs each op alone on its recorded inputs and compares
<g, y - b> with sum_i <J~_i^T g, x_i> (one vector-Jacobian product) for a few random g: a
violation of size e shows with probability one, its norm estimated as the root mean square of the
differences. On a ``vanilla`` model the check names the GELUs, norms, attention and gates; on a
``libragrad`` model, nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor
from torch.utils import _pytree as pytree

from ._base import Attribution, Inputs, Target, as_tuple, extra_args, input_gradients
from .biases import Biases, spelling
from ..core.pruned_ops import read_by_backward

__all__ = ["completeness", "Completeness", "node_completeness", "NodeCheck", "NodeCompleteness", "METHODS"]

METHODS = ("fullgrad", "input_x_gradient", "integrated_gradients")


@dataclass
class Completeness:
    """How far a method's attributions are from summing to what they explain, per sample."""

    method: str
    preset: str
    target: Tensor | None
    """The class attributed [B] (None for a callable readout)."""
    output: Tensor
    """f_t(x) [B]: the target's value."""
    reference: Tensor
    """What the attributions should sum to [B]: f_t(x), or f_t(x) - f_t(x') for Integrated Gradients."""
    attributed: Tensor
    """What they sum to [B]."""

    @property
    def abs_error(self) -> Tensor:
        return (self.attributed - self.reference).abs()

    @property
    def rel_error(self) -> Tensor:
        return self.abs_error / self.reference.abs().clamp_min(torch.finfo(self.reference.dtype).tiny)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "preset": self.preset,
                "target": self.target.tolist() if self.target is not None else None,
                "output": self.output.tolist(), "reference": self.reference.tolist(),
                "attributed": self.attributed.tolist(), "abs_error": self.abs_error.tolist(),
                "rel_error": self.rel_error.tolist()}

    def __str__(self) -> str:
        lines = [f"completeness of {self.method} (preset {self.preset}): worst relative error "
                 f"{float(self.rel_error.max()):.2e}",
                 f"  {'sample':>6} {'target':>6} {'reference':>12} {'attributed':>12} {'abs error':>10} "
                 f"{'rel error':>10}"]
        for i in range(len(self.output)):
            target = int(self.target[i]) if self.target is not None else "-"
            lines.append(f"  {i:>6} {target:>6} {float(self.reference[i]):>12.5g} "
                         f"{float(self.attributed[i]):>12.5g} {float(self.abs_error[i]):>10.2e} "
                         f"{float(self.rel_error[i]):>10.2e}")
        return "\n".join(lines)


def completeness(model: nn.Module, inputs: Inputs, target: Target = None, method: str = "fullgrad", *,
                 preset: str | None = None, additional_forward_args: Any = None, **kwargs: Any) -> Completeness:
    """Per sample: f_t(x), what ``method`` attributes, and the absolute and relative error.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed with ``preset`` on every
            call: pass the transformed model to check it repeatedly; what is read from its graph is kept).
        inputs: a tensor [B, ...] or a tuple of tensors.
        target: the class per sample (None: the predicted class), ``"prob"`` /
            :class:`~libragrad_fx.attr.Probability`, or a callable ``output -> Tensor [B]``
            (:mod:`libragrad_fx.attr.readout`): FullGrad then sums to the readout's value, the
            readout's own biases included (a probability's head is not locally complete: it does not).
        method: ``fullgrad`` (Input x Gradient plus every bias's share: complete under LibraGrad on
            any model), ``input_x_gradient`` (complete on bias-free models) or
            ``integrated_gradients`` (sums to f(x) - f(x') with the vanilla gradient; ``kwargs``
            go to its ``attribute``: ``baselines``, ``n_steps``, ``method``...).
        preset: the rule preset for a plain model (default ``libragrad``).
    """
    from .. import attr
    from .readout import resolve

    extra = extra_args(additional_forward_args)
    xs = as_tuple(inputs)
    if method == "fullgrad":
        explainer = attr.FullGrad(model, preset=preset)
        result = explainer.decompose(xs, target, additional_forward_args, **kwargs)
        return Completeness(method, explainer.preset, result.target, result.output, result.output.double(),
                            result.attributed)
    if method == "input_x_gradient":
        if kwargs:
            raise TypeError(f"input_x_gradient takes no options, got {', '.join(kwargs)}")
        explainer = attr.InputXGradient(model, preset=preset)
        grads, value, index = input_gradients(explainer, xs, target, extra)
        attributed = _total(tuple(x.detach() * g for x, g in zip(xs, grads)))
        return Completeness(method, explainer.preset, index, value, value.double(), attributed)
    if method == "integrated_gradients":
        explainer = attr.IntegratedGradients(model, preset=preset)
        target = resolve(target, lambda: explainer.output(xs, extra), xs[0].shape[0], xs[0].device)
        maps, delta = explainer.attribute(xs, target=target, additional_forward_args=additional_forward_args,
                                          return_convergence_delta=True, **kwargs)
        attributed = _total(as_tuple(maps))
        value, index = explainer.value(xs, target, extra)
        return Completeness(method, explainer.preset, index, value, attributed - delta.double(), attributed)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def _total(maps: tuple[Tensor, ...]) -> Tensor:
    return sum(m.detach().double().flatten(1).sum(1) for m in maps)


# --- where it breaks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeCheck:
    node: str
    op: str
    error: float
    """||y - sum_i J~_i x_i - b|| relative to the larger of ||y||, ||b||, ||sum_i J~_i x_i||."""
    bias: bool
    """Whether a bias enters here."""


@dataclass
class NodeCompleteness:
    """Local completeness of every op on a gradient path."""

    model: str
    preset: str
    tol: float
    checks: list[NodeCheck] = field(default_factory=list)

    @property
    def violations(self) -> list[NodeCheck]:
        """The ops where completeness breaks (relative error above ``tol``)."""
        return [c for c in self.checks if not c.error <= self.tol]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "preset": self.preset, "tol": self.tol,
                "checks": [asdict(c) for c in self.checks], "violations": [c.node for c in self.violations]}

    def __str__(self) -> str:
        bad = self.violations
        head = (f"local completeness: {self.model} (preset {self.preset}): {len(self.checks)} ops on gradient "
                f"paths, {len(bad)} not complete (relative error > {self.tol:g})")
        if not bad:
            return head
        width = max(len(c.node) for c in bad)
        op_width = min(max(len(c.op) for c in bad), 44)
        return "\n".join([head] + [f"  {c.node:<{width}}  {c.op:<{op_width}}  {c.error:.2e}" for c in bad])


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps every value."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=False)


def node_completeness(model: nn.Module, inputs: Inputs, *, preset: str | None = None,
                      additional_forward_args: Any = None, tol: float = 1e-4, probes: int = 3,
                      seed: int = 0) -> NodeCompleteness:
    """Check y = sum_i J~_i x_i + b at every op on a gradient path and list where it fails.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed with ``preset``).
        inputs: a tensor [B, ...] or a tuple of tensors (the input-dependent values).
        tol: the relative error above which an op is reported as not complete.
        probes: random projections per op (the error estimate's degrees of freedom).
        seed: for the projections.
    """
    explainer = Attribution(model, preset=preset)
    xs = as_tuple(inputs)
    extra = extra_args(additional_forward_args)
    gm = explainer.graph_module(xs, extra)
    biases = explainer.compiled(xs, extra).biases
    recorder = _Recorder(biases.module)
    with torch.no_grad():
        recorder.run(*(x.detach() for x in xs), *extra)
    by_name = {n.name: n for n in biases.module.graph.nodes}
    values = {node: recorder.env[by_name[node.name]] for node in gm.graph.nodes if node.name in by_name}
    constants = {name: recorder.env[by_name[node]] for name, node in biases.constant_nodes.items()}
    generator = torch.Generator().manual_seed(seed)
    report = NodeCompleteness(type(model).__name__ if not hasattr(gm, "libragrad_report")
                              else gm.libragrad_report.model, explainer.preset, tol)
    wrapped = {unit[0] for unit in biases.units.values()}
    sites = {s.node for s in biases.sites}
    runner = fx.Interpreter(gm)  # runs gm's own nodes (the tapped copy may spell an in-place op otherwise)
    for node in gm.graph.nodes:
        if node not in biases.live or node in wrapped or not node.op.startswith("call"):
            continue
        if not _floats(values.get(node)):
            continue
        unit = biases.units.get(node, (node,))
        outputs, inputs = _rerun(runner, unit, biases, values)
        read = read_by_backward(node.target, node.args, outputs[0]) if len(outputs) == 1 else None
        error = _projected_error(outputs, _bias_of(node, outputs, constants), inputs, probes, generator, read)
        report.checks.append(NodeCheck(node.name, spelling(unit, biases.analysis), error, node.name in sites))
    return report


def _floats(value: Any) -> bool:
    leaves = pytree.tree_leaves(value)
    return bool(leaves) and all(isinstance(v, Tensor) and v.is_floating_point() for v in leaves)


def _any_floats(value: Any) -> bool:
    return any(isinstance(v, Tensor) and v.is_floating_point() for v in pytree.tree_leaves(value))


def _leaf(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().requires_grad_(True)
    return value


def _bias_of(node: fx.Node, outputs: list[Tensor], constants: dict[str, Tensor]) -> list[Tensor | None]:
    """The bias entering each output of ``node`` (a tuple-valued op has one per element), or None."""
    if node.name in constants:
        return [constants[node.name]] * len(outputs)
    return [constants.get(f"{node.name}[{i}]") for i in range(len(outputs))]


def _rerun(runner: fx.Interpreter, unit: tuple[fx.Node, ...], biases: Biases,
           values: dict) -> tuple[list[Tensor], list[Tensor]]:
    """The op ``unit`` alone on its recorded inputs: (its outputs, its input-dependent operands as the
    leaves they were computed from)."""
    streams = []
    for node in unit:
        for _, arg in biases.analysis.dep_args(node):
            if arg not in unit and arg not in streams and _any_floats(values.get(arg)):
                streams.append(arg)
    # each stream (a tensor, or a tuple of them such as unbind's) as fresh leaves of its own
    # (max(x, dim) gives values and indices: only the float elements are leaves)
    leaves = {arg: pytree.tree_map(_leaf, values[arg]) for arg in streams}
    local: dict[fx.Node, Any] = {}
    with torch.enable_grad():
        for node in unit:
            op = biases.analysis[node].op
            inplace = op is not None and op.inplace

            def value(a: fx.Node) -> Any:
                if a in local:
                    return local[a]
                if a in leaves:  # an in-place op must not write into a leaf
                    return pytree.tree_map(torch.clone, leaves[a]) if inplace else leaves[a]
                return values[a]

            args = fx.node.map_arg(node.args, value)
            kwargs = fx.node.map_arg(node.kwargs, value)
            local[node] = getattr(runner, node.op)(node.target, args, kwargs)
    return pytree.tree_leaves(local[unit[-1]]), [leaf for a in streams for leaf in pytree.tree_leaves(leaves[a])
                                                 if leaf.requires_grad]


def _projected_error(outputs: list[Tensor], bias: list[Tensor | None], inputs: list[Tensor], probes: int,
                     generator: torch.Generator, read: Tensor | None = None) -> float:
    """||y - b - sum_i J~_i x_i|| relative to the size of the terms, from <g, .> for random g:
    <g, y - b> is computed directly, <g, sum_i J~_i x_i> as sum_i <J~_i^T g, x_i> (the backward).
    ``read``: the output elements a pruned op's backward reads; g is zero elsewhere."""
    rest = [(y - b if b is not None else y).detach().double() for y, b in zip(outputs, bias)]
    # a -inf padding (before a max-pool) is a constant no gradient reaches: keep it out of the sums
    finite = [r.isfinite() for r in rest]
    rest = [torch.where(f, r, 0.0) for f, r in zip(finite, rest)]
    live = [i for i, y in enumerate(outputs) if y.requires_grad]
    errors, linear = [], []
    for _ in range(probes):
        g = [torch.where(f, torch.randn(y.shape, generator=generator, dtype=torch.float64).to(y.device), 0.0)
             for f, y in zip(finite, outputs)]
        if read is not None:
            g = [gi * read.double() for gi in g]
        direct = sum(float((gi * r).sum()) for gi, r in zip(g, rest))
        through = 0.0
        if live and inputs:
            vjps = torch.autograd.grad([outputs[i] for i in live], inputs,
                                       [g[i].to(outputs[i].dtype) for i in live], retain_graph=True, allow_unused=True)
            through = sum(float(torch.where(v != 0, v.double() * x.detach().double(), 0.0).sum())
                          for v, x in zip(vjps, inputs) if v is not None)
        errors.append(direct - through)
        linear.append(through)

    def norm(tensors: list[Tensor]) -> float:
        return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors))

    scale = max(norm([torch.where(f, y.detach().double(), 0.0) for f, y in zip(finite, outputs)]), norm(rest),
                math.sqrt(sum(t * t for t in linear) / probes),
                torch.finfo(torch.float32).tiny)
    return math.sqrt(sum(e * e for e in errors) / probes) / scale
