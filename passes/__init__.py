"""The LibraGrad rewrite passes, one module per family (docs/METHOD.md section 2).

A pass reads the :class:`~libragrad_fx.core.analysis.Analysis` of a graph and returns the edits its
family's rule calls for; it never touches the graph itself. The driver keeps the edits of the
families a preset enables, drops those that no gradient would reach, and applies the rest with
:mod:`libragrad_fx.core.rewrite`. Three kinds of edit cover every rule:

* :class:`Detach`: stop the gradient on one argument of one node (a gate factor, a score-path input);
* :class:`Replace`: compute a node with another op of identical forward (a fused kernel's custom op);
* :class:`Wrap`: pass a node's value through a forward-identity function that changes its gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch.fx as fx

from libragrad_fx.core.analysis import Analysis, Cut, Kind
from libragrad_fx.core.ops import Category

__all__ = ["Edit", "Detach", "Replace", "Wrap", "SELF", "LibraGradPass", "FAMILIES", "PASSES", "gate_cuts",
           "ParamRef", "param"]

FAMILIES = ("nonlinearity", "normalization", "attention", "gating")


class _Self:
    """Stands for the wrapped node in :class:`Wrap` arguments."""

    def __repr__(self) -> str:
        return "SELF"


SELF = _Self()


@dataclass(frozen=True)
class Edit:
    node: fx.Node
    family: str
    rule: str
    why: str


@dataclass(frozen=True)
class Detach(Edit):
    cut: Cut = field(default=None)


@dataclass(frozen=True)
class Replace(Edit):
    target: Callable = field(default=None)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Wrap(Edit):
    fn: Callable = field(default=None)
    args: tuple = ()
    bias: float = 0.0
    """An additive constant the rule introduces (e.g. f(0) of the identity rule): part of FullGrad's biases."""


class LibraGradPass:
    """Match nodes, apply one family's rule, say why. Subclasses set ``family`` and ``plan``."""

    family: ClassVar[str]

    def plan(self, analysis: Analysis) -> list[Edit]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(family={self.family!r})"


class ParamRef(str):
    """The dotted path of a module's parameter; the rewriter turns it into a ``get_attr`` node."""


def param(node: fx.Node, op: Any, name: str) -> Any:
    """A weight or bias argument: a graph value for functional calls, a parameter path for modules."""
    value = op.args.get(name)
    if op.module is not None:
        return ParamRef(f"{node.target}.{name}") if value is not None else None
    return value


def _name(node: fx.Node) -> str:
    return node.name


def gate_cuts(analysis: Analysis) -> list[tuple[Cut, str, str]]:
    """Every gate factor of a stream product and every input-dependent denominator, with the
    family whose rule detaches it and why. The families split this list between them.
    """
    out = []
    for node, facts in analysis.facts.items():
        if facts.category is not Category.PRODUCT or facts.kind is not Kind.STREAM:
            continue
        factors, denominators = analysis.factors(node)
        stream_bases = {analysis.base(a) for _, a in factors if analysis.kind(a) is Kind.STREAM}
        for arg, source in factors:
            gate = analysis[source]
            if gate.kind is not Kind.GATE or gate.nondiff:
                continue
            family = gate.family or "gating"
            if family == "gating" and gate.gate_of is not None and gate.gate_of in stream_bases:
                family = "nonlinearity"  # x * sigmoid(1.702 x): an activation the graph spells out
            out.append((Cut(source, node, arg), family, f"gate {_name(source)} multiplies a stream"))
        for arg, source in denominators:
            gate = analysis[source]
            if gate.nondiff:
                continue
            family = gate.family if gate.kind is Kind.GATE and gate.family else "gating"
            out.append((Cut(source, node, arg), family, f"input-dependent denominator {_name(source)}"))
    return out


from . import attention, gating, nonlinearity, normalization  # noqa: E402  (the passes need the types above)

PASSES: tuple[LibraGradPass, ...] = (
    nonlinearity.NonlinearityPass(),
    normalization.NormalizationPass(),
    attention.AttentionPass(),
    gating.GatingPass(),
)
