"""The driver: capture -> analyse -> rewrite -> verify -> report."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from libragrad_fx.passes import FAMILIES, PASSES, Detach, Edit, Scale
from libragrad_fx.passes.pixel import PIXEL_RULES, PixelPass

from .analysis import META, Analysis, Kind, Liveness, live_nodes
from .capture import capture as capture_graph
from .errors import ForwardMismatchError
from .ops import Category
from .prune import apply as apply_pruning
from .prune import plan as plan_pruning
from .report import Report, Rewritten, Unclassified
from .rewrite import apply_edits
from .shapes import propagate

__all__ = ["transform", "PRESETS", "PIXEL_RULES", "VERIFY"]

PRESETS: dict[str, frozenset[str]] = {
    "libragrad": frozenset(FAMILIES),
    "vanilla": frozenset(),
    **{f"no-{'activation' if f == 'nonlinearity' else 'norm' if f == 'normalization' else f}":
       frozenset(FAMILIES) - {f} for f in FAMILIES},
}
VERIFY = (True, False, "forward", "gradient")

_COMPLETE = (Category.STRUCTURAL, Category.LINEAR, Category.PIECEWISE, Category.SOURCE, Category.REWRITTEN)
_NEEDS_RULE = (Category.ACTIVATION, Category.NORM, Category.ATTENTION)


def transform(model: nn.Module, example_inputs: Any = None, *, preset: str = "libragrad",
              example_kwargs: dict | None = None, concrete_args: dict | None = None,
              capture: str = "auto", verify: bool | str = True, prune: bool = True,
              pixel_rule: str | None = None) -> fx.GraphModule:
    """Rewrite ``model`` into its LibraGrad form: same forward, FullGrad-complete backward.

    Args:
        model: any ``nn.Module``; it is not modified, and the result shares its parameters.
        example_inputs: a tensor or tuple of positional inputs. Needed when torch.fx cannot trace
            the model (torch.export is used then) and for the checks.
        preset: ``libragrad`` (all four rule families), ``vanilla`` (no rewrite) or an ablation
            ``no-attention``, ``no-norm``, ``no-activation``, ``no-gating``.
        example_kwargs: keyword inputs for torch.export (e.g. ``inputs_embeds``).
        concrete_args: forward arguments to fix while tracing (default: defaulted non-tensors).
        capture: ``auto`` (torch.fx, then torch.export where tracing fails), ``fx`` or ``export``.
        verify: with example inputs, ``True`` / ``"forward"`` checks that the forward is the model's
            (bit for bit, or within rounding: the report says which; beyond it a
            :class:`~libragrad_fx.core.errors.ForwardMismatchError`); ``"gradient"`` also checks every
            op on a gradient path for local completeness and puts the per-node results in
            ``report.gradient``; ``False`` checks nothing.
        prune: let the backward skip what the rules pruned (column-sparse projections, attention
            with constant weights; :mod:`libragrad_fx.core.prune`). Same gradient, less work.
        pixel_rule: ``"dissent"``: dissent suppression on the linear maps and convolutions that read
            the input (a patch embedding, a stem; :mod:`libragrad_fx.passes.pixel`), under any preset:
            the same forward and token-level gradient, pixel gradients through the contributions
            that agree with each output's sign. ``None`` (default): the plain backward there.

    Returns:
        A recompiled ``torch.fx.GraphModule`` with ``.libragrad_report`` (a :class:`Report`).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"transform() takes an nn.Module, got {type(model).__name__}")
    if pixel_rule is not None and pixel_rule not in PIXEL_RULES:
        raise ValueError(f"unknown pixel_rule {pixel_rule!r}; valid: {', '.join(PIXEL_RULES)} (or None)")
    if verify not in VERIFY:
        raise ValueError(f"verify={verify!r}; valid: True, False, 'forward', 'gradient'")
    if verify == "gradient" and example_inputs is None:
        raise ValueError("verify='gradient' runs the model: pass example_inputs")
    families = PRESETS[preset]
    captured = capture_graph(model, example_inputs, example_kwargs=example_kwargs, concrete_args=concrete_args,
                             method=capture, unroll=bool(families))
    gm = captured.gm
    analysis = Analysis(gm, captured.input_names)
    report = Report(model=type(model).__name__, preset=preset, capture=captured.method, pixel_rule=pixel_rule,
                    nodes=sum(1 for n in gm.graph.nodes if n.op not in ("placeholder", "output")),
                    notes=list(captured.notes) + analysis.notes)

    planned = [edit for p in PASSES for edit in p.plan(analysis)]
    if pixel_rule is not None:
        pixel = PixelPass(pixel_rule)
        planned += pixel.plan(analysis)
        report.notes += pixel.notes
        families = families | {pixel.family}
    enabled = [e for e in planned if e.family in families]
    flow = live_nodes(analysis, [e.cut for e in enabled if isinstance(e, Detach)])
    full_flow = live_nodes(analysis, [e.cut for e in planned if isinstance(e, Detach)])
    kept = [e for e in enabled if _matters(e, flow)]
    skipped = [e for e in planned if e.family not in families and _matters(e, full_flow)]
    _fill_report(report, analysis, kept, skipped, flow, full_flow)
    cuts = [e.cut for e in kept if isinstance(e, Detach)]
    prunings = _plan_pruning(analysis, flow, cuts, example_inputs, example_kwargs, report.notes,
                             real=not _runs_in_training_mode(model)) if prune else []
    replaced = {e.node for e in kept if e.family == "pixel"}
    prunings = [p for p in prunings if p.node not in replaced]  # the pixel rule's op has its own backward
    apply_edits(gm, kept)
    report.backward = [Rewritten(e.node.name, _op_name(analysis, e.node), e.family, e.rule, e.why)
                       for e in apply_pruning(gm, prunings)]
    for node in gm.graph.nodes:
        node.meta.pop(META, None)  # facts hold modules and nodes: never let deepcopy follow them
    gm.libragrad_report = report

    if verify and example_inputs is not None:
        if _runs_in_training_mode(model):  # it would update BatchNorm statistics and draw dropout masks
            report.forward_check = "skipped: the model is in training mode"
        else:
            report.forward_check = _forward_check(model, gm, example_inputs, example_kwargs, report)
    if verify == "gradient":
        from .verify import check_graph, default_tol

        xs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        tensors = [x for x in xs if isinstance(x, torch.Tensor)]
        dtype = next((x.dtype for x in tensors if x.is_floating_point()), torch.float32)
        report.gradient = check_graph(gm, tensors, tol=default_tol(dtype), model=report.model, preset=preset)
    report.warn()
    report.warn_silent()
    return gm


def _matters(edit: Edit, flow: Liveness) -> bool:
    """An edit no gradient would reach is left out (e.g. a LayerNorm on a detached query)."""
    if isinstance(edit, (Detach, Scale)):
        return edit.cut.consumer in flow.to_output
    return edit.node in flow.live


def _op_name(analysis: Analysis, node: fx.Node) -> str:
    op = analysis[node].op
    return op.spelling if op is not None else node.op


def _fill_report(report: Report, analysis: Analysis, kept: list[Edit], skipped: list[Edit],
                 flow: Liveness, full_flow: Liveness) -> None:
    """Put every input-dependent node in exactly one bucket (:data:`~libragrad_fx.core.report.BUCKETS`)."""
    def row(edit: Edit) -> Rewritten:
        return Rewritten(edit.node.name, _op_name(analysis, edit.node), edit.family, edit.rule, edit.why)

    report.rewritten = [row(e) for e in kept]
    report.skipped = [row(e) for e in skipped]
    rewritten = {e.node for e in kept}
    turned_off = {e.node for e in skipped} | {e.cut.source for e in skipped if isinstance(e, Detach)}
    complete: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    for node, facts in analysis.facts.items():
        if not node.op.startswith("call") or facts.kind is Kind.CONST:
            continue
        spelling = _op_name(analysis, node)
        bucket, reason = _bucket(node, facts, analysis, flow, full_flow, rewritten, turned_off)
        buckets[bucket] += 1
        if bucket == "complete":
            complete[reason] += 1
        elif bucket == "head":
            report.head.append(Rewritten(node.name, spelling, "head", "kept as is",
                                         "the model's output nonlinearity: attribute the logit before it"))
        elif bucket == "unclassified":
            report.unclassified.append(Unclassified(node.name, spelling, reason))
    report.complete = dict(complete)
    report.buckets = {name: buckets[name] for name in ("rewritten", "skipped", "head", "complete", "no gradient",
                                                       "unclassified") if buckets[name]}
    report.pruned = buckets["no gradient"]


def _bucket(node: fx.Node, facts, analysis: Analysis, flow: Liveness, full_flow: Liveness, rewritten: set,
            turned_off: set) -> tuple[str, str]:
    """(bucket, reason) of one input-dependent node: the first rule that holds, unclassified if none."""
    entry = analysis.entry(node)
    if facts.role == "interior":
        return "complete", "composite"  # one op with the composite that reads it
    if node not in flow.live:
        return "no gradient", ""
    if facts.issue:
        return "unclassified", facts.issue
    if node in rewritten:
        return "rewritten", ""
    if node in turned_off or node not in full_flow.live:
        return "skipped", ""  # the preset left a rule off: its gradient is vanilla
    if facts.role == "head":
        return "head", ""
    if facts.role == "stranded":
        return "unclassified", f"{facts.op.name} output reaches a stream other than as a product factor"
    if facts.nondiff:
        if analysis.absorbed(node):
            return "complete", "nondiff"  # selects or multiplies: a constant factor
        return "unclassified", ("non-differentiable (zero gradient) but its value reaches a stream additively: "
                                "no bias accounts for it")
    if facts.category is Category.OPAQUE:
        if entry is not None and entry.reason:
            return "unclassified", entry.reason
        if node.op == "call_module":
            return "unclassified", "opaque module: its ops are hidden"
        return "unclassified", "no rule for this op"
    if facts.role == "wrapped":
        return "complete", facts.category.value  # a rule already applies (a transformed graph)
    if (facts.category in _NEEDS_RULE and facts.kind is Kind.STREAM) or facts.role == "activation" or (
            facts.category is Category.PRODUCT and facts.degree != 1.0):
        return "unclassified", "no rule for this spelling"
    if facts.category in _COMPLETE or (facts.category is Category.PRODUCT and facts.degree == 1.0):
        return "complete", facts.category.value
    if facts.kind is Kind.GATE and analysis.absorbed(node):
        return "complete", "gate"
    return "unclassified", f"{facts.category.value if facts.category else node.op} op on a gradient path, " \
                           "not known to be complete"


def _plan_pruning(analysis: Analysis, flow: Liveness, cuts: list, example_inputs: Any, example_kwargs: dict | None,
                  notes: list[str], real: bool) -> list:
    """The backward pruning plan; shapes from one run of the graph (a failed run says where)."""
    gm = analysis.gm
    wants_shapes = example_inputs is not None and any(
        f.op is not None and f.op.name == "linear" for n, f in analysis.facts.items() if n in flow.live)
    if not wants_shapes or all("val" in n.meta for n in gm.graph.nodes if n.op != "output"):
        return plan_pruning(analysis, flow, cuts, example_inputs, example_kwargs, notes)
    shapes = propagate(gm, example_inputs, example_kwargs, real=real)
    if shapes.values is None:
        notes.append(f"backward pruning of fused projections skipped: the shape run failed {shapes.failure}")
        return plan_pruning(analysis, flow, cuts, None, None, [])
    added = [n for n in gm.graph.nodes if n in shapes.values and "val" not in n.meta]
    for n in added:
        n.meta["val"] = shapes.values[n]
    try:
        return plan_pruning(analysis, flow, cuts, example_inputs, example_kwargs, notes)
    finally:
        for n in added:
            n.meta.pop("val", None)


def _runs_in_training_mode(model: nn.Module) -> bool:
    """Whether two forwards of ``model`` may differ (dropout masks, BatchNorm statistics).

    A ``torch.export`` program's module keeps ``training=True`` as a placeholder (its ``eval()``
    raises): its graph runs the mode it was exported in, so ask the graph for seeded random ops
    and buffer updates instead.
    """
    stateful = getattr(getattr(torch.export, "_unlift", None), "_StatefulGraphModule", None)
    if stateful is None or not isinstance(model, stateful):
        return model.training
    for node in model.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        schema = node.target._schema
        mode = [i for i, a in enumerate(schema.arguments) if a.name in ("train", "training")]
        if mode:  # dropout / batch_norm spelled with their mode: exported in eval they carry False
            i = mode[0]
            flag = node.args[i] if i < len(node.args) else node.kwargs.get(schema.arguments[i].name, False)
            if flag is True:
                return True
        elif torch.Tag.nondeterministic_seeded in node.target.tags:
            return True
        elif schema.is_mutable and node.args and isinstance(node.args[0], fx.Node) and node.args[0].op == "get_attr":
            return True  # a buffer updated in place (running statistics)
    return False


def _with_grad(value: Any) -> Any:
    """An input as explanations pass it: a leaf that requires grad (a float tensor), else as it is."""
    if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
        return value.detach().clone().requires_grad_(True)
    return value


def _forward_check(model: nn.Module, gm: fx.GraphModule, example_inputs: Any, example_kwargs: dict | None,
                   report: Report) -> str:
    """Compare the graph with the model run as explanations run it (gradients on, inputs requiring grad).

    Bit-identical is said only when ``torch.equal`` holds; a difference within rounding (a few
    epsilon of the output's scale per level of the graph) is reported with its size; beyond that,
    :class:`ForwardMismatchError`. A model whose no-grad forward takes another path (the fused fast
    path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoder`` in eval) gets a note with the difference.
    """
    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    kwargs = example_kwargs or {}
    with torch.enable_grad():
        expected = model(*(_with_grad(a) for a in args), **{k: _with_grad(v) for k, v in kwargs.items()})
        got = gm(*(_with_grad(a) for a in args), **{k: _with_grad(v) for k, v in kwargs.items()})
    pairs = [(a.detach(), b.detach()) for a, b in zip(_tensors(expected), _tensors(got))]
    with torch.no_grad():
        fast = [t.detach() for t in _tensors(model(*args, **kwargs))]
    slow = [a for a, _ in pairs]
    if len(fast) == len(slow) and not all(torch.equal(a, b) for a, b in zip(fast, slow)):
        gap = max((_difference(a, b) for a, b in zip(fast, slow)), default=math.inf)
        report.notes.append(f"the model's forward under torch.no_grad() differs from its forward with gradients by "
                            f"{gap:.2g} (a fused fast path, e.g. nn.MultiheadAttention's in eval mode); "
                            "explanations run with gradients, and the check compares with that")
    if not pairs:
        return "no tensor output to compare"
    if all(torch.equal(a, b) for a, b in pairs):
        return "bit-identical to the model on the example inputs (run with gradients, as explanations run it)"
    worst = max(_difference(a, b) for a, b in pairs)
    tol = max(_tolerance(a, report.nodes) for a, _ in pairs)
    if worst <= tol:
        return (f"within rounding of the model on the example inputs: max abs difference {worst:.2g} "
                f"(limit {tol:.2g}, from the dtype's epsilon, the output's scale and the graph's depth)")
    raise ForwardMismatchError(f"{report.model}: the transformed graph's forward differs from the model's by {worst:.3g} "
                               f"(limit {tol:.2g}): this is a libragrad-fx bug; please report it with the model")


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    if not (a.is_floating_point() or a.is_complex()):
        return 0.0 if torch.equal(a, b) else math.inf
    diff = (a.double() - b.double()).abs()
    both_inf = torch.isinf(a) & torch.isinf(b) & (a == b)
    return float(torch.where(both_inf | (torch.isnan(a) & torch.isnan(b)), 0.0, diff).max()) if a.numel() else 0.0


def _tolerance(reference: torch.Tensor, depth: int) -> float:
    """Rounding allowed between two evaluations of one function: epsilon of the dtype, times the
    output's scale, times sqrt(depth) for the rounding of each level, times 8."""
    if not reference.is_floating_point():
        return 0.0
    finite = reference[torch.isfinite(reference)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    return 8 * torch.finfo(reference.dtype).eps * max(scale, 1.0) * math.sqrt(max(depth, 1))


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return [t for t in vars(value).values() if isinstance(t, torch.Tensor)] if hasattr(value, "__dict__") else []
