"""Op coverage, generated: does every op get a rule, stay complete as it is, or get reported?

Two sources of ops, both generated rather than listed by hand:

* every entry of the op registry (``libragrad_fx.core.ops``) with its example call;
* every overload of torch's core ATen opset (``torch.Tag.core``), with a sample recorded from the
  registry's examples (their forward and backward, as dispatched to ATen) or from
  :data:`SAMPLES` where no example reaches it.

For each op, in float64: one-op graphs with every combination of input-dependent floating-point
arguments (the others constant), and two-op graphs that multiply its output by a stream or add it
to one. Each graph is transformed with ``verify="gradient"``; an op passes when every node the
gradient check finds not locally complete (relative error > 1e-10) is named by the report
(unclassified, head, or skipped), and the forward is bit-identical. Nothing may be silent.

    python tools/coverage.py             # writes docs/coverage.md
    python tools/coverage.py --check     # exit 1 if docs/coverage.md is not what the code gives now
"""
from __future__ import annotations

import argparse
import itertools
import re
import sys
import types
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import libragrad_fx as lf  # noqa: E402
from libragrad_fx.core import ops  # noqa: E402

TABLE = ROOT / "docs" / "coverage.md"
VARIANTS = ("alone", "times stream", "plus stream")
MAX_COMBOS = 7
"""Argument combinations per op: every one up to three floating-point arguments; beyond, each alone and all."""


def tensors(seed: int = 0) -> Callable[..., torch.Tensor]:
    """``t(*shape, positive=False)``: float64 tensors for examples, seeded."""
    generator = torch.Generator().manual_seed(seed)

    def t(*shape: int, positive: bool = False) -> torch.Tensor:
        if positive:
            return torch.rand(shape, generator=generator, dtype=torch.float64) + 0.5
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    return t


@dataclass
class Case:
    """One op and one call of it."""

    name: str
    fn: Callable
    args: tuple
    kwargs: dict = field(default_factory=dict)


WITHOUT_EXAMPLE: dict[str, str] = {
    "shape": "no tensor value (a shape, a size, an assertion)",
    "factory": "a new tensor from shapes and literals: a constant",
    "rewritten": "inserted by libragrad-fx (tests/test_rules.py checks each rule)",
    "resize": "resizes its storage in place", "nonzero": "a data-dependent output shape",
    "unique": "a data-dependent output shape", "bernoulli": "random", "multinomial": "random",
    "is_nonzero": "a Python bool", "equal": "a Python bool", "one_hot": "integer tensors only",
    "bincount": "integer tensors only", **{f"bitwise_{k}": "integer tensors only"
                                           for k in ("and", "or", "not", "xor", "left_shift", "right_shift")},
}
"""Why a registry entry has no example: by its category, or by its name."""


def registry_cases() -> list[Case]:
    """One case per registry entry with an example."""
    out = []
    for entry in ops.entries():
        if entry.example is not None:
            fn, args, kwargs = entry.example(tensors())
            out.append(Case(entry.name, fn, tuple(args), dict(kwargs)))
    return out


# --- core ATen samples ---------------------------------------------------------------------------

def core_ops() -> list[torch._ops.OpOverload]:
    """Every overload of torch's core ATen opset, by name.

    Read from the dispatcher's list of registered operators: ``dir(torch.ops.aten)`` lists only the
    packets some code has touched so far, so the set would depend on what ran before."""
    found = []
    names = sorted({name.split("::", 1)[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
                    if name.startswith("aten::")})
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for overload in packet.overloads():
            op = getattr(packet, overload)
            if torch.Tag.core in op.tags:
                found.append(op)
    return sorted(found, key=str)


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[torch._ops.OpOverload, tuple] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.seen:
            self.seen[func] = pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v,
                                              (args, kwargs))
        return func(*args, **kwargs)


def _t(*shape: int, positive: bool = False) -> torch.Tensor:
    return tensors(1)(*shape, positive=positive)


SAMPLES: dict[str, Callable[[], tuple]] = {
    # core ATen ops that no registry example reaches: (args, kwargs) of one call
    "aten._cdist_forward.default": lambda: ((_t(3, 4), _t(5, 4), 2.0, None), {}),
    "aten.resize_.default": lambda: ((_t(3, 4), [3, 4]), {}),
    "aten.sym_is_contiguous.default": lambda: ((_t(3, 4),), {}),
    "aten._pdist_forward.default": lambda: ((_t(5, 4), 2.0), {}),
    "aten._fft_r2c.default": lambda: ((_t(3, 8), [1], 0, True), {}),
    "aten._embedding_bag.default": lambda: ((_t(10, 4), torch.tensor([1, 2, 4, 5]), torch.tensor([0, 2])), {}),
    "aten.bitwise_and.Tensor": lambda: ((torch.tensor([1, 2, 3]), torch.tensor([3, 1, 2])), {}),
    "aten.bitwise_and.Scalar": lambda: ((torch.tensor([1, 2, 3]), 1), {}),
    "aten.bitwise_or.Tensor": lambda: ((torch.tensor([1, 2, 3]), torch.tensor([3, 1, 2])), {}),
    "aten.bitwise_or.Scalar": lambda: ((torch.tensor([1, 2, 3]), 1), {}),
    "aten.bitwise_xor.Tensor": lambda: ((torch.tensor([1, 2, 3]), torch.tensor([3, 1, 2])), {}),
    "aten.bitwise_xor.Scalar": lambda: ((torch.tensor([1, 2, 3]), 1), {}),
    "aten.bitwise_not.default": lambda: ((torch.tensor([1, 2, 3]),), {}),
    "aten.logical_and.default": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.logical_or.default": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.logical_xor.default": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.logical_not.default": lambda: ((_t(3, 4),), {}),
    "aten.any.default": lambda: ((_t(3, 4) > 0,), {}),
    "aten.any.dim": lambda: ((_t(3, 4) > 0, 1), {}),
    "aten.any.dims": lambda: ((_t(3, 4) > 0, [1]), {}),
    "aten.isinf.default": lambda: ((_t(3, 4),), {}),
    "aten.isnan.default": lambda: ((_t(3, 4),), {}),
    "aten.sign.default": lambda: ((_t(3, 4),), {}),
    "aten.round.default": lambda: ((_t(3, 4),), {}),
    "aten.trunc.default": lambda: ((_t(3, 4),), {}),
    "aten.ceil.default": lambda: ((_t(3, 4),), {}),
    "aten.floor.default": lambda: ((_t(3, 4),), {}),
    "aten.argmax.default": lambda: ((_t(3, 4), 1), {}),
    "aten.argmin.default": lambda: ((_t(3, 4), 1), {}),
    "aten.nonzero.default": lambda: ((_t(3, 4) > 0,), {}),
    "aten.eq.Scalar": lambda: ((_t(3, 4), 0.5), {}), "aten.eq.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.ne.Scalar": lambda: ((_t(3, 4), 0.5), {}), "aten.ne.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.gt.Scalar": lambda: ((_t(3, 4), 0.5), {}), "aten.gt.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.ge.Scalar": lambda: ((_t(3, 4), 0.5), {}), "aten.ge.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.lt.Scalar": lambda: ((_t(3, 4), 0.5), {}), "aten.lt.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.le.Scalar": lambda: ((_t(3, 4), 0.5), {}), "aten.le.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.remainder.Scalar": lambda: ((_t(3, 4), 0.7), {}), "aten.remainder.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.fmod.Scalar": lambda: ((_t(3, 4), 0.7), {}), "aten.fmod.Tensor": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.div.Scalar_mode": lambda: ((_t(3, 4), 0.7), {"rounding_mode": "floor"}),
    "aten.div.Tensor_mode": lambda: ((_t(3, 4), _t(3, 4, positive=True)), {"rounding_mode": "trunc"}),
    "aten.div.Scalar": lambda: ((_t(3, 4), 0.7), {}),
    "aten.mul.Scalar": lambda: ((_t(3, 4), 0.7), {}),
    "aten.add.Scalar": lambda: ((_t(3, 4), 0.7), {}),
    "aten.sub.Scalar": lambda: ((_t(3, 4), 0.7), {}),
    "aten.pow.Scalar": lambda: ((2.0, _t(3, 4)), {}),
    "aten.pow.Tensor_Tensor": lambda: ((_t(3, 4, positive=True), _t(3, 4)), {}),
    "aten.clamp.Tensor": lambda: ((_t(3, 4), _t(3, 4) - 1, _t(3, 4) + 1), {}),
    "aten.scatter.value": lambda: ((_t(3, 4), 1, torch.tensor([[0, 2]] * 3), 0.5), {}),
    "aten.scalar_tensor.default": lambda: ((0.5,), {}),
    "aten.full.default": lambda: (([3, 4], 0.5), {}),
    "aten.full_like.default": lambda: ((_t(3, 4), 0.5), {}),
    "aten.arange.start_step": lambda: ((0, 4, 1), {}),
    "aten.empty.memory_format": lambda: (([3, 4],), {}),
    "aten.empty_strided.default": lambda: (([3, 4], [4, 1]), {}),
    "aten.max.dim": lambda: ((_t(3, 4), 1), {}), "aten.min.dim": lambda: ((_t(3, 4), 1), {}),
    "aten.prod.default": lambda: ((_t(3, 4),), {}), "aten.prod.dim_int": lambda: ((_t(3, 4), 1), {}),
    "aten.var.correction": lambda: ((_t(3, 4), [1]), {"correction": 1, "keepdim": True}),
    "aten.var.dim": lambda: ((_t(3, 4), [1]), {}),
    "aten.mean.default": lambda: ((_t(3, 4),), {}),
    "aten.reflection_pad3d.default": lambda: ((_t(1, 2, 3, 3, 3), [1] * 6), {}),
    "aten.replication_pad3d.default": lambda: ((_t(1, 2, 3, 3, 3), [1] * 6), {}),
    "aten.avg_pool3d.default": lambda: ((_t(1, 2, 4, 4, 4), [2, 2, 2]), {}),
    "aten.max_pool3d_with_indices.default": lambda: ((_t(1, 2, 4, 4, 4), [2, 2, 2]), {}),
    "aten._adaptive_avg_pool3d.default": lambda: ((_t(1, 2, 4, 4, 4), [2, 2, 2]), {}),
    "aten._fft_c2r.default": lambda: ((torch.randn(3, 5, dtype=torch.complex128), [1], 0, 8), {}),
    "aten.atan2.out": lambda: ((_t(3, 4), _t(3, 4)), {"out": torch.empty(3, 4, dtype=torch.float64)}),
    "aten.sym_size.int": lambda: ((_t(3, 4), 0), {}),
    "aten.sym_numel.default": lambda: ((_t(3, 4),), {}),
    "aten.sym_stride.int": lambda: ((_t(3, 4), 0), {}),
    "aten.sym_storage_offset.default": lambda: ((_t(3, 4),), {}),
    "aten._local_scalar_dense.default": lambda: ((_t(1),), {}),
    "aten.squeeze.dims": lambda: ((_t(3, 1, 4), [1]), {}),
    "aten.select_scatter.default": lambda: ((_t(3, 4), _t(3), 1, 2), {}),
    "aten.masked_scatter.default": lambda: ((_t(3, 4), torch.tensor([True, False, True, False]), _t(3, 4)), {}),
    "aten.index_put.default": lambda: ((_t(3, 4), [torch.tensor([0, 2])], _t(2, 4)), {}),
    "aten.embedding.default": lambda: ((_t(10, 4), torch.tensor([[1, 2], [4, 5]])), {}),
    "aten._adaptive_avg_pool2d.default": lambda: ((_t(2, 3, 4, 4), [2, 2]), {}),
    "aten._adaptive_avg_pool2d_backward.default": lambda: ((_t(2, 3, 2, 2), _t(2, 3, 4, 4)), {}),
    "aten.adaptive_avg_pool1d.default": lambda: ((_t(2, 3, 4), [2]), {}),
    "aten.avg_pool1d.default": lambda: ((_t(2, 3, 4), [2]), {}),
    "aten._native_batch_norm_legit.default": lambda: (
        (_t(3, 4), _t(4), _t(4), torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), True, 0.1,
         1e-5), {}),
    "aten._native_batch_norm_legit.no_stats": lambda: ((_t(3, 4), _t(4), _t(4), True, 0.1, 1e-5), {}),
    "aten._native_batch_norm_legit_no_training.default": lambda: (
        (_t(3, 4), _t(4), _t(4), _t(4), _t(4, positive=True), 0.1, 1e-5), {}),
    "aten._to_copy.default": lambda: ((_t(3, 4),), {"dtype": torch.float64}),
    "aten.alias.default": lambda: ((_t(3, 4),), {}),
    "aten.copy.default": lambda: ((_t(3, 4), _t(3, 4)), {}),
    "aten.embedding_dense_backward.default": lambda: ((_t(2, 2, 4), torch.tensor([[1, 2], [4, 5]]), 10, -1, False), {}),
    "aten.upsample_bilinear2d.vec": lambda: ((_t(2, 3, 4, 4), None, False, [2.0, 2.0]), {}),
    "aten.upsample_nearest2d.vec": lambda: ((_t(2, 3, 4, 4), None, [2.0, 2.0]), {}),
}

_RANDOM = "random: its forward differs on every run, nothing to keep bit for bit"


def aten_cases() -> tuple[list[Case], dict[str, str]]:
    """One case per core ATen overload that has a sample; and, for the others, why not."""
    recorder = _Recorder()
    for case in registry_cases():
        args, kwargs = pytree.tree_map(lambda v: v.detach().clone().requires_grad_(v.is_floating_point())
                                       if isinstance(v, torch.Tensor) else v, (case.args, case.kwargs))
        try:
            with recorder:
                out = case.fn(*args, **kwargs)
                floats = [o for o in pytree.tree_leaves(out) if isinstance(o, torch.Tensor) and o.requires_grad]
                if floats:
                    sum(o.sum() for o in floats).backward()
        except Exception:  # an example whose backward is not defined (indices): its forward is recorded
            pass
    cases, missing = [], {}
    for overload in core_ops():
        name = f"aten.{overload._opname}.{overload._overloadname}"
        if torch.Tag.nondeterministic_seeded in overload.tags:
            missing[name] = _RANDOM
            continue
        if name in SAMPLES:
            args, kwargs = SAMPLES[name]()
        elif overload in recorder.seen:
            args, kwargs = recorder.seen[overload]
        else:
            missing[name] = "no sample: no registry example reaches it and none is given"
            continue
        cases.append(Case(name, overload, tuple(args), dict(kwargs)))
    return cases, missing


# --- graphs --------------------------------------------------------------------------------------

class OneOp(nn.Module):
    """``op(*args)``, its chosen floating-point arguments as inputs, the rest constants; then, for a
    two-op graph, times or plus a stream of its output's shape."""

    def __init__(self, case: Case, dep: tuple[int, ...], variant: str, output: Any) -> None:
        super().__init__()
        self.fn, self.variant, self.dep = case.fn, variant, dep
        self.flat, self.spec = pytree.tree_flatten((case.args, case.kwargs))
        for i, value in enumerate(self.flat):
            if isinstance(value, torch.Tensor) and i not in dep:
                self.register_buffer(f"c{i}", value.clone())
        self.index = next(i for i, o in enumerate(output) if isinstance(o, torch.Tensor)) if isinstance(
            output, (tuple, list)) else None

    def body(self, *xs: torch.Tensor) -> Any:
        given = iter(xs)
        flat = [next(given) if i in self.dep else getattr(self, f"c{i}") if isinstance(v, torch.Tensor) else v
                for i, v in enumerate(self.flat)]
        args, kwargs = pytree.tree_unflatten(flat, self.spec)
        if isinstance(self.fn, (types.MethodDescriptorType, types.WrapperDescriptorType)):  # Tensor.view
            out = getattr(args[0], self.fn.__name__)(*args[1:], **kwargs)
        else:
            out = self.fn(*args, **kwargs)
        if self.index is not None:
            out = out[self.index]
        if self.variant == "times stream":
            out = out * next(given)
        elif self.variant == "plus stream":
            out = out + next(given)
        return out


def _with_inputs(count: int) -> type:
    """OneOp with ``forward(self, x0, ..., x{count-1})``: torch.fx makes one placeholder per input."""
    names = ", ".join(f"x{i}" for i in range(count))
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {names}):\n    return self.body({names})\n", namespace)
    return type(f"OneOp{count}", (OneOp,), {"forward": namespace["forward"]})


@dataclass
class Outcome:
    case: str
    variant: str
    dep: tuple[str, ...]
    status: str
    """``rule``, ``complete``, ``no gradient``, ``reported``, ``n/a`` or ``FAIL``."""
    detail: str = ""


def _combos(floats: list[int]) -> list[tuple[int, ...]]:
    if len(floats) <= 3:
        return [c for k in range(1, len(floats) + 1) for c in itertools.combinations(floats, k)]
    return [(i,) for i in floats] + [tuple(floats)]


def run_case(case: Case, variants: tuple[str, ...] = VARIANTS, all_combos: bool = True) -> list[Outcome]:
    """Every graph of one case; an outcome per graph."""
    flat, _ = pytree.tree_flatten((case.args, case.kwargs))
    floats = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    try:
        with torch.no_grad():
            output = case.fn(*case.args, **case.kwargs)
    except Exception as error:
        return [Outcome(case.name, "alone", (), "FAIL", f"the example does not run: {type(error).__name__}: {error}")]
    first = next((o for o in pytree.tree_leaves(output) if isinstance(o, torch.Tensor)), None)
    if not floats:
        return [Outcome(case.name, "alone", (), "n/a", "no floating-point argument: nothing depends on an input")]
    if first is None:
        return [Outcome(case.name, "alone", (), "n/a", "no tensor output")]
    out = []
    for variant in variants:
        for dep in (_combos(floats) if all_combos or variant == "alone" else [tuple(floats)]):
            out.append(_run(case, variant, dep, output, first))
    return out


def _run(case: Case, variant: str, dep: tuple[int, ...], output: Any, first: torch.Tensor) -> Outcome:
    flat, _ = pytree.tree_flatten((case.args, case.kwargs))
    names = tuple(_arg_names(case)[i] for i in dep)
    inputs = [flat[i] for i in dep]
    if variant != "alone":
        if not first.is_floating_point() and variant == "plus stream":
            return Outcome(case.name, variant, names, "n/a", "a non-float output")
        inputs.append(tensors(7)(*first.shape) if first.dim() else tensors(7)(1).reshape(()))
    model = _with_inputs(len(inputs))(case, dep, variant, output).eval()
    try:  # an argument the op does not differentiate (BatchNorm's running statistics) cannot be an input
        with torch.enable_grad():
            out = model(*(x.detach().clone().requires_grad_(True) for x in inputs))
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.sum().backward()
    except (RuntimeError, NotImplementedError) as error:
        return Outcome(case.name, variant, names, "n/a", "no derivative with these arguments input-dependent: "
                       + str(error).splitlines()[0][:120])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = lf.transform(model, tuple(inputs), capture="fx", verify="gradient")
    except Exception as error:
        return Outcome(case.name, variant, names, "FAIL", f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
    report = gm.libragrad_report
    if not report.forward_check.startswith("bit-identical"):
        return Outcome(case.name, variant, names, "FAIL", f"forward: {report.forward_check}")
    silent = report.silent()
    if silent:
        return Outcome(case.name, variant, names, "FAIL", "not complete and not reported: " + ", ".join(
            f"{c.node} ({c.op}, {c.error:.1e})" for c in silent))
    own, consumer = _own_nodes(gm, variant)
    rows = [u for u in report.unclassified if u.node in own]
    if rows:
        return Outcome(case.name, variant, names, "reported", rows[0].reason)
    if any(h.node in own for h in report.head):
        return Outcome(case.name, variant, names, "reported", "head: an output nonlinearity, kept")
    # the op's own rewrites, and the product's rule that detaches it where it multiplies a stream
    rules = sorted({f"{r.family}: {r.rule}" for r in report.rewritten if r.node in own or (
        r.node == consumer and any(re.search(rf"\b{re.escape(name)}\b", r.why) for name in own))})
    if rules:
        return Outcome(case.name, variant, names, "rule", "; ".join(rules))
    checked = {c.node for c in report.gradient.checks}
    if variant != "alone" and not (own & checked):
        return Outcome(case.name, variant, names, "no gradient", "cut by a rule (a gate where it multiplies)")
    return Outcome(case.name, variant, names, "complete")


def _own_nodes(gm: torch.fx.GraphModule, variant: str) -> tuple[set[str], str | None]:
    """Names of the nodes the op itself made, and of the two-op graph's product or sum (None alone)."""
    calls = [n for n in gm.graph.nodes if n.op.startswith("call") and "libragrad_for" not in n.meta]
    if variant == "alone":
        return {n.name for n in calls}, None
    return {n.name for n in calls[:-1]}, calls[-1].name


def _arg_names(case: Case) -> list[str]:
    flat, spec = pytree.tree_flatten((case.args, case.kwargs))
    positions = pytree.tree_unflatten(list(range(len(flat))), spec)
    names = [""] * len(flat)
    for i, arg in enumerate(positions[0]):
        for j in pytree.tree_leaves(arg):
            names[j] = f"arg{i}"
    for key, arg in positions[1].items():
        for j in pytree.tree_leaves(arg):
            names[j] = key
    return names


# --- the table -----------------------------------------------------------------------------------

def summarise(outcomes: list[Outcome]) -> str:
    """An op's status: ``rule`` if a rule makes it complete in some use; ``complete`` if complete as it
    is in every use; ``reported`` if reported in some use and no rule applies in any."""
    statuses = {o.status for o in outcomes if not (o.status == "reported" and o.detail.startswith("head"))}
    if "FAIL" in statuses:
        return "FAIL"
    if "rule" in statuses:
        return "rule"
    if "reported" in statuses:
        return "reported"
    if statuses <= {"n/a"} and statuses:
        return "n/a"
    return "complete"


def _cell(outcomes: list[Outcome]) -> str:
    seen = []
    for o in outcomes:
        text = o.status + (f" ({o.detail})" if o.detail and o.status not in ("complete",) else "")
        if text not in seen:
            seen.append(text)
    return "; ".join(seen).replace("|", "/") or "-"


def table(aten: list[Case], missing: dict[str, str], results: dict[str, list[Outcome]]) -> str:
    rows, counts = [], Counter()
    for case in aten:
        outcomes = results[case.name]
        status = summarise(outcomes)
        counts[status] += 1
        canonical, _ = ops.canonical(case.name.split(".")[1])
        entry = ops.lookup(canonical)
        known = f"`{canonical}` ({entry.category.value})" if entry is not None else "not in the registry"
        cells = [_cell([o for o in outcomes if o.variant == v]) for v in VARIANTS]
        rows.append(f"| `{case.name}` | {known} | **{status}** | " + " | ".join(cells) + " |")
    for name, why in missing.items():
        counts["not run"] += 1
        canonical, _ = ops.canonical(name.split(".")[1])
        entry = ops.lookup(canonical)
        known = f"`{canonical}` ({entry.category.value})" if entry is not None else "not in the registry"
        rows.append(f"| `{name}` | {known} | not run | {why} | | |")
    header = [
        "# Op coverage: torch's core ATen opset",
        "",
        "Generated by `python tools/coverage.py` (torch " + torch.__version__.split("+")[0] + "); "
        "`tests/test_coverage.py` checks that it is up to date and that nothing is silent.",
        "",
        "For each core ATen overload (`torch.Tag.core`), in float64: one-op graphs with every combination of "
        "input-dependent floating-point arguments, and two-op graphs that multiply its output by a stream or add it "
        "to one. Each is transformed with `verify=\"gradient\"`: every node not locally complete (relative error "
        "> 1e-10) must be named by the report, and the forward must be bit-identical.",
        "",
        "Status: **rule** (a LibraGrad rule makes it complete in some use), **complete** (complete as it is in "
        "every use: linear, piecewise linear, structural, a constant, or a gate cut where it multiplies), "
        "**reported** (the report names it where no rule reaches: the reason is given), **n/a** (no "
        "floating-point input or output), **not run** (the reason is given). A gate alone at the output is the "
        "model's head, kept and reported by design.",
        "",
        "Totals: " + ", ".join(f"{k} {counts[k]}" for k in ("rule", "complete", "reported", "n/a", "not run", "FAIL")
                               if counts[k]) + f" (of {len(aten) + len(missing)} overloads).",
        "",
        "| op | registry | status | alone | times a stream | plus a stream |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(header + sorted(rows)) + "\n"


def generate() -> tuple[str, dict[str, list[Outcome]]]:
    aten, missing = aten_cases()
    results = {case.name: run_case(case) for case in aten}
    return table(aten, missing, results), results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/coverage.md instead of writing it")
    parser.add_argument("--out", default=str(TABLE))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text, results = generate()
    failures = [o for outcomes in results.values() for o in outcomes if o.status == "FAIL"]
    for o in failures:
        print(f"FAIL {o.case} [{o.variant}, input-dependent {', '.join(o.dep)}]: {o.detail}", file=sys.stderr)
    if args.check:
        current = Path(args.out).read_text() if Path(args.out).exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python tools/coverage.py", file=sys.stderr)
            return 1
        return 1 if failures else 0
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
