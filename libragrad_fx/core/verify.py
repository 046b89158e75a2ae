"""Where does completeness break? Local completeness of every op on a gradient path.

Every op on a gradient path must be locally complete under the backward the model runs
(docs/METHOD.md section 1):

    y = sum_i J~_i x_i + b        (x_i: its input-dependent operands; b: its bias, or 0)

with J~_i the Jacobians its backward implements and b the bias that enters there: the op evaluated
with its streams at zero, at a *bias site* (an op that takes a constant in an additive argument,
the op registry's ``ADDITIVE`` role: exactly where FullGrad finds its biases), zero elsewhere.
:func:`node_completeness` runs each op alone on its recorded inputs and compares <g, y - b> with
sum_i <J~_i^T g, x_i> (one vector-Jacobian product) for a few random g: a violation of size e
shows with probability one, its norm estimated as the root mean square of the differences. On a
``vanilla`` model it names the GELUs, norms, attention and gates; on a ``libragrad`` model, nothing
but what the report lists as unclassified. ``transform(..., verify="gradient")`` puts its
per-node results in the report.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor
from torch.utils import _pytree as pytree

from . import ops
from .analysis import Analysis, Kind, live_nodes
from .ops import Category
from .pruned_ops import read_by_backward

__all__ = ["NodeCheck", "NodeCompleteness", "node_completeness", "default_tol"]


def default_tol(dtype: torch.dtype) -> float:
    """The relative error above which an op is not locally complete, for values of ``dtype``:
    1e-10 in float64, 1e-4 in float32, 1e-2 in half precision (a few thousand roundings of the
    dtype's epsilon, the most a single op's sums accumulate)."""
    eps = torch.finfo(dtype).eps
    return 1e-10 if eps < 1e-12 else 1e-4 if eps < 1e-6 else 1e-2


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

    @property
    def worst(self) -> float:
        return max((c.error for c in self.checks), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "preset": self.preset, "tol": self.tol,
                "checks": [asdict(c) for c in self.checks], "violations": [c.node for c in self.violations]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NodeCompleteness":
        return cls(data["model"], data["preset"], data["tol"], [NodeCheck(**c) for c in data.get("checks", [])])

    def __str__(self) -> str:
        bad = self.violations
        head = (f"local completeness: {self.model} (preset {self.preset}): {len(self.checks)} ops on gradient "
                f"paths, {len(bad)} not complete (relative error > {self.tol:g})")
        if not bad:
            return head
        width = max(len(c.node) for c in bad)
        op_width = min(max(len(c.op) for c in bad), 44)
        return "\n".join([head] + [f"  {c.node:<{width}}  {c.op:<{op_width}}  {c.error:.2e}" for c in bad])


def node_completeness(model: nn.Module, inputs: Any, *, preset: str | None = None,
                      additional_forward_args: Any = None, tol: float | None = None, probes: int = 3,
                      seed: int = 0, progress: Callable[[int, int], None] | None = None) -> NodeCompleteness:
    """Check y = sum_i J~_i x_i + b at every op on a gradient path and list where it fails.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed with ``preset``).
        inputs: a tensor [B, ...] or a tuple of tensors (the input-dependent values).
        tol: the relative error above which an op is reported as not complete (default: from the
            inputs' dtype, :func:`default_tol`).
        probes: random projections per op (the error estimate's degrees of freedom).
        seed: for the projections.
        progress: called as ``progress(done, total)`` as the ops are checked (a progress display's hook).
    """
    xs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    extra = () if additional_forward_args is None else tuple(additional_forward_args) if isinstance(
        additional_forward_args, (tuple, list)) else (additional_forward_args,)
    gm = _transformed(model, xs + extra, preset)
    report = gm.libragrad_report
    if tol is None:
        tol = default_tol(next((x.dtype for x in xs if x.is_floating_point()), torch.float32))
    return check_graph(gm, xs, extra, tol=tol, probes=probes, seed=seed, model=report.model, preset=report.preset,
                       progress=progress)


def _transformed(model: nn.Module, example: tuple, preset: str | None) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule) and hasattr(model, "libragrad_report"):
        made = model.libragrad_report.preset
        if preset is not None and preset != made:
            raise ValueError(f"the model was transformed with preset {made!r}, not {preset!r}: "
                             f"pass the plain model to use preset {preset!r}")
        return model
    from .transform import transform

    return transform(model, example if len(example) > 1 else example[0], preset=preset or "libragrad")


def check_graph(gm: fx.GraphModule, inputs: Sequence[Tensor], extra: Sequence = (), *, tol: float, probes: int = 3,
                seed: int = 0, model: str = "", preset: str = "",
                progress: Callable[[int, int], None] | None = None,
                analysis: Analysis | None = None) -> NodeCompleteness:
    """:func:`node_completeness` on a transformed graph whose first placeholders take ``inputs``
    (``analysis``: the graph's analysis with those inputs, where one exists already)."""
    if analysis is None:
        analysis = Analysis(gm, [n.name for n in gm.graph.nodes if n.op == "placeholder"][:len(inputs)])
    units = analysis.units()
    inner = {n for unit in units.values() for n in unit[:-1]}
    live = live_nodes(analysis, []).live
    values = _record(gm, [x.detach() for x in inputs] + list(extra), analysis)
    generator = torch.Generator().manual_seed(seed)
    report = NodeCompleteness(model or type(gm).__name__, preset, tol)
    runner = fx.Interpreter(gm)
    todo = [node for node in gm.graph.nodes if node in live and node not in inner and node.op.startswith("call")
            and _floats(values.get(node))]
    for done, node in enumerate(todo):
        if progress is not None:
            progress(done, len(todo))
        unit = units.get(node, (node,))
        outputs, leaves = _rerun(runner, unit, analysis, values)
        bias = _bias(runner, unit, analysis, values, len(outputs)) if _is_site(unit, analysis) else [None] * len(outputs)
        read = read_by_backward(node.target, node.args, outputs[0]) if len(outputs) == 1 else None
        error = _projected_error(outputs, bias, leaves, probes, generator, read)
        report.checks.append(NodeCheck(node.name, _spelling(unit, analysis), error, any(b is not None for b in bias)))
    if progress is not None:
        progress(len(todo), len(todo))
    return report


# --- values --------------------------------------------------------------------------------------

class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps every value; a value a later op writes into is kept as it was."""

    def __init__(self, module: fx.GraphModule, overwritten: set[fx.Node]) -> None:
        super().__init__(module, garbage_collect_values=False)
        self.overwritten = overwritten
        self.kept: dict[fx.Node, Any] = {}

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        self.kept[node] = pytree.tree_map(lambda v: v.clone() if isinstance(v, Tensor) else v, value) if (
            node in self.overwritten) else value
        return value


def _record(gm: fx.GraphModule, inputs: list, analysis: Analysis) -> dict[fx.Node, Any]:
    overwritten = {n.args[0] for n, f in analysis.facts.items()
                   if f.op is not None and f.op.inplace and n.args and isinstance(n.args[0], fx.Node)}
    recorder = _Recorder(gm, overwritten)
    with torch.no_grad():
        recorder.run(*inputs)
    return recorder.kept


def _floats(value: Any) -> bool:
    leaves = pytree.tree_leaves(value)
    return bool(leaves) and all(isinstance(v, Tensor) and v.is_floating_point() for v in leaves)


def _any_floats(value: Any) -> bool:
    return any(isinstance(v, Tensor) and v.is_floating_point() for v in pytree.tree_leaves(value))


def _leaf(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().requires_grad_(True)
    return value


def _streams(unit: tuple[fx.Node, ...], analysis: Analysis, values: dict) -> list[fx.Node]:
    out = []
    for node in unit:
        for _, arg in analysis.dep_args(node):
            if arg not in unit and arg not in out and _any_floats(values.get(arg)):
                out.append(arg)
    return out


def _evaluate(runner: fx.Interpreter, unit: tuple[fx.Node, ...], analysis: Analysis, values: dict,
              given: dict[fx.Node, Any]) -> Any:
    """The op ``unit`` alone: its nodes run on ``given`` for its streams, recorded values elsewhere."""
    local: dict[fx.Node, Any] = {}
    for node in unit:
        op = analysis[node].op
        inplace = op is not None and op.inplace

        def value(a: fx.Node) -> Any:
            if a in local:
                return local[a]
            if a in given:  # an in-place op must not write into a leaf
                return pytree.tree_map(torch.clone, given[a]) if inplace else given[a]
            return values[a]

        args = fx.node.map_arg(node.args, value)
        kwargs = fx.node.map_arg(node.kwargs, value)
        local[node] = getattr(runner, node.op)(node.target, args, kwargs)
    return local[unit[-1]]


def _rerun(runner: fx.Interpreter, unit: tuple[fx.Node, ...], analysis: Analysis,
           values: dict) -> tuple[list[Tensor], list[Tensor]]:
    """The op ``unit`` alone on its recorded inputs: (its outputs, its input-dependent operands as the
    leaves they were computed from)."""
    streams = _streams(unit, analysis, values)
    # each stream (a tensor, or a tuple of them such as unbind's) as fresh leaves of its own
    # (max(x, dim) gives values and indices: only the float elements are leaves)
    leaves = {arg: pytree.tree_map(_leaf, values[arg]) for arg in streams}
    with torch.enable_grad():
        out = _evaluate(runner, unit, analysis, values, leaves)
    return pytree.tree_leaves(out), [leaf for a in streams for leaf in pytree.tree_leaves(leaves[a])
                                     if isinstance(leaf, Tensor) and leaf.requires_grad]


def _bias(runner: fx.Interpreter, unit: tuple[fx.Node, ...], analysis: Analysis, values: dict,
          count: int) -> list[Tensor | None]:
    """The bias of a site: the op evaluated with its streams at zero (for each of its outputs).

    A linear map's or convolution's bias is read as it is (what the map gives at zero input, without
    the cost of a matmul of zeros)."""
    read = _read_bias(unit, analysis, values)
    if read is not None:
        return [read]
    zeros = {arg: pytree.tree_map(lambda v: torch.zeros_like(v) if isinstance(v, Tensor) and v.is_floating_point()
                                  else v, values[arg]) for arg in _streams(unit, analysis, values)}
    with torch.no_grad():
        out = pytree.tree_leaves(_evaluate(runner, unit, analysis, values, zeros))
    return [o.detach() if isinstance(o, Tensor) and o.is_floating_point() else None for o in out][:count]


def _read_bias(unit: tuple[fx.Node, ...], analysis: Analysis, values: dict) -> Tensor | None:
    """linear(0, W, b) = b over the last dimension; conv(0, W, b) = b on every position of each channel."""
    node = unit[-1]
    op = analysis[node].op
    if len(unit) != 1 or op is None or op.name not in ("linear", "conv", "conv_transpose"):
        return None
    if [name for name, _ in analysis.dep_args(node)] != ["input"]:
        return None  # an input-dependent weight or bias: evaluate the op
    bias = op.args.get("bias")
    bias = values.get(bias) if isinstance(bias, fx.Node) else bias
    output = values.get(node)
    if not isinstance(bias, Tensor) or not isinstance(output, Tensor):
        return None
    bias = bias.detach()
    return bias if op.name == "linear" else bias.reshape(-1, *[1] * (output.dim() - 2))


def _is_site(unit: tuple[fx.Node, ...], analysis: Analysis) -> bool:
    """Whether a constant enters the op ``unit`` additively (the registry's ``ADDITIVE`` arguments)."""
    for node in unit:
        facts = analysis[node]
        if facts.op is None:
            continue
        for name in ops.additive(facts.op.name):
            if name == "running_mean" and facts.category is Category.NORM:
                continue  # train-mode BatchNorm normalises with the batch's mean, not the running one
            value = facts.op.args.get(name)
            for member in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(member, fx.Node) and member not in unit and analysis.kind(member) is Kind.CONST:
                    return True
                if isinstance(member, Tensor):  # a module's own parameter or buffer
                    return True
                if isinstance(member, numbers.Number) and not isinstance(member, bool) and member != 0:
                    return True
    return False


def _spelling(unit: tuple[fx.Node, ...], analysis: Analysis) -> str:
    """How the graph spells an op or a wrapped op (``F.softplus + identity_rule``)."""
    parts = []
    for node in unit:
        facts = analysis[node]
        if facts.role == "interior":
            continue
        spelled = facts.op.spelling if facts.op is not None else node.op
        if facts.op is not None and facts.op.name == "libragrad.factor_grad":
            continue
        parts.append(spelled)
    return " + ".join(p.removeprefix("libragrad.") for p in parts)


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
