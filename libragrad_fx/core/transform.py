"""The driver: capture -> analyse -> rewrite -> verify -> report."""
from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from libragrad_fx.passes import FAMILIES, PASSES, Detach, Edit

from .analysis import META, Analysis, Kind, Liveness, live_nodes
from .capture import capture as capture_graph
from .ops import Category
from .prune import apply as apply_pruning
from .prune import plan as plan_pruning
from .report import Report, Rewritten, Unclassified
from .rewrite import apply_edits

__all__ = ["transform", "PRESETS"]

PRESETS: dict[str, frozenset[str]] = {
    "libragrad": frozenset(FAMILIES),
    "vanilla": frozenset(),
    **{f"no-{'activation' if f == 'nonlinearity' else 'norm' if f == 'normalization' else f}":
       frozenset(FAMILIES) - {f} for f in FAMILIES},
}

_COMPLETE = (Category.STRUCTURAL, Category.LINEAR, Category.PIECEWISE, Category.SOURCE, Category.REWRITTEN)
_NEEDS_RULE = (Category.ACTIVATION, Category.NORM, Category.ATTENTION)


def transform(model: nn.Module, example_inputs: Any = None, *, preset: str = "libragrad",
              example_kwargs: dict | None = None, concrete_args: dict | None = None,
              capture: str = "auto", verify: bool = True, prune: bool = True) -> fx.GraphModule:
    """Rewrite ``model`` into its LibraGrad form: same forward, FullGrad-complete backward.

    Args:
        model: any ``nn.Module``; it is not modified, and the result shares its parameters.
        example_inputs: a tensor or tuple of positional inputs. Needed when torch.fx cannot trace
            the model (torch.export is used then) and for the forward check.
        preset: ``libragrad`` (all four rule families), ``vanilla`` (no rewrite) or an ablation
            ``no-attention``, ``no-norm``, ``no-activation``, ``no-gating``.
        example_kwargs: keyword inputs for torch.export (e.g. ``inputs_embeds``).
        concrete_args: forward arguments to fix while tracing (default: defaulted non-tensors).
        capture: ``auto`` (torch.fx, then torch.export where tracing fails), ``fx`` or ``export``.
        verify: with example inputs, check that the forward is bit-identical to the model's.
        prune: let the backward skip what the rules pruned (column-sparse projections, attention
            with constant weights; :mod:`libragrad_fx.core.prune`). Same gradient, less work.

    Returns:
        A recompiled ``torch.fx.GraphModule`` with ``.libragrad_report`` (a :class:`Report`).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"transform() takes an nn.Module, got {type(model).__name__}")
    captured = capture_graph(model, example_inputs, example_kwargs=example_kwargs, concrete_args=concrete_args,
                             method=capture)
    gm = captured.gm
    analysis = Analysis(gm, captured.input_names)
    report = Report(model=type(model).__name__, preset=preset, capture=captured.method,
                    nodes=sum(1 for n in gm.graph.nodes if n.op not in ("placeholder", "output")),
                    notes=list(captured.notes))

    families = PRESETS[preset]
    planned = [edit for p in PASSES for edit in p.plan(analysis)]
    enabled = [e for e in planned if e.family in families]
    flow = live_nodes(analysis, [e.cut for e in enabled if isinstance(e, Detach)])
    full_flow = live_nodes(analysis, [e.cut for e in planned if isinstance(e, Detach)])
    kept = [e for e in enabled if _matters(e, flow)]
    skipped = [e for e in planned if e.family not in families and _matters(e, full_flow)]
    _fill_report(report, analysis, planned, kept, skipped, flow.live)
    cuts = [e.cut for e in kept if isinstance(e, Detach)]
    prunings = plan_pruning(analysis, flow, cuts, example_inputs, example_kwargs, report.notes) if prune else []
    apply_edits(gm, kept)
    report.backward = [Rewritten(e.node.name, _op_name(analysis, e.node), e.family, e.rule, e.why)
                       for e in apply_pruning(gm, prunings)]
    for node in gm.graph.nodes:
        node.meta.pop(META, None)  # facts hold modules and nodes: never let deepcopy follow them

    if verify and example_inputs is not None:
        if _runs_in_training_mode(model):  # it would update BatchNorm statistics and draw dropout masks
            report.forward_check = "skipped: the model is in training mode"
        else:
            report.forward_check = _forward_check(model, gm, example_inputs, example_kwargs)
    gm.libragrad_report = report
    report.warn()
    return gm


def _matters(edit: Edit, flow: Liveness) -> bool:
    """An edit no gradient would reach is left out (e.g. a LayerNorm on a detached query)."""
    if isinstance(edit, Detach):
        return edit.cut.consumer in flow.to_output
    return edit.node in flow.live


def _op_name(analysis: Analysis, node: fx.Node) -> str:
    op = analysis[node].op
    return op.spelling if op is not None else node.op


def _fill_report(report: Report, analysis: Analysis, planned: list[Edit], kept: list[Edit],
                 skipped: list[Edit], live: frozenset) -> None:
    def row(edit: Edit) -> Rewritten:
        return Rewritten(edit.node.name, _op_name(analysis, edit.node), edit.family, edit.rule, edit.why)

    report.rewritten = [row(e) for e in kept]
    report.skipped = [row(e) for e in skipped]
    covered = {e.node for e in planned}
    complete: Counter[str] = Counter()
    for node, facts in analysis.facts.items():
        if node.op in ("placeholder", "get_attr", "output") or facts.kind is Kind.CONST:
            continue
        if node not in live:
            continue
        spelling = _op_name(analysis, node)
        if facts.role == "head":
            report.head.append(Rewritten(node.name, spelling, "head", "kept as is",
                                         "the model's output nonlinearity: attribute the logit before it"))
        elif facts.role == "stranded":
            report.unclassified.append(Unclassified(
                node.name, spelling, f"{facts.op.name} output reaches a stream other than as a product factor"))
        elif facts.category is Category.OPAQUE:
            reason = "opaque module: its ops are hidden" if node.op == "call_module" else "no rule for this op"
            report.unclassified.append(Unclassified(node.name, spelling, reason))
        elif ((facts.category in _NEEDS_RULE and facts.kind is Kind.STREAM) or facts.role == "activation") \
                and facts.role != "wrapped":
            if node not in covered:
                report.unclassified.append(Unclassified(node.name, spelling, "no rule for this spelling"))
        elif facts.category in _COMPLETE or facts.role == "wrapped" or (
                facts.category is Category.PRODUCT and facts.degree == 1.0):
            complete[facts.category.value] += 1
    report.complete = dict(complete)
    report.pruned = sum(1 for n, f in analysis.facts.items()
                        if f.kind is not Kind.CONST and n.op not in ("placeholder", "output") and n not in live)


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


def _forward_check(model: nn.Module, gm: fx.GraphModule, example_inputs: Any, example_kwargs: dict | None) -> str:
    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    kwargs = example_kwargs or {}
    with torch.no_grad():
        expected = model(*args, **kwargs)
        got = gm(*args, **kwargs)
    pairs = list(zip(_tensors(expected), _tensors(got)))
    if not pairs:
        return "no tensor output to compare"
    if all(torch.equal(a, b) for a, b in pairs):
        return "bit-identical to the model on the example inputs"
    worst = max(float((a - b).abs().max()) for a, b in pairs if a.shape == b.shape)
    raise AssertionError(f"forward changed by the rewrite: max abs difference {worst:.3g} "
                         "(this is a libragrad-fx bug; please report it with the model)")


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return [t for t in vars(value).values() if isinstance(t, torch.Tensor)] if hasattr(value, "__dict__") else []
