"""The LibraGrad rewrite passes, one module per family (docs/METHOD.md section 2).

A pass reads the :class:`~libragrad_fx.core.analysis.Analysis` of a graph and returns the edits its
family's rule calls for; it never touches the graph itself. The driver keeps the edits of the
families a preset enables, drops those that no gradient would reach, and applies the rest with
:mod:`libragrad_fx.core.rewrite`. Four kinds of edit cover every rule:

* :class:`Detach`: stop the gradient on one argument of one node (a gate factor, a score-path input);
* :class:`Scale`: scale the gradient on one argument of one node (a factor of fused arithmetic's product);
* :class:`Replace`: compute a node with another op of identical forward (a fused kernel's custom op);
* :class:`Wrap`: pass a node's value through a forward-identity function that changes its gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch.fx as fx

from libragrad_fx.core.analysis import Analysis, Cut, Kind
from libragrad_fx.core.ops import SELF, Category, ParamRef, param

__all__ = ["Edit", "Detach", "Scale", "Replace", "Wrap", "SELF", "LibraGradPass", "FAMILIES", "PASSES", "gate_cuts",
           "ParamRef", "param"]

FAMILIES = ("nonlinearity", "normalization", "attention", "gating")


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
class Scale(Edit):
    cut: Cut = field(default=None)
    """The edge whose gradient is scaled (it is not cut)."""
    scale: float = 1.0


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


def _name(node: fx.Node) -> str:
    return node.name


def gate_cuts(analysis: Analysis) -> list[tuple[Cut, str, str]]:
    """Every gate factor of a stream product's term (one that multiplies a stream) and every
    input-dependent denominator, with the family whose rule detaches it and why. The families
    split this list between them.
    """
    out: list[tuple[Cut, str, str]] = []
    for node, facts in analysis.facts.items():
        if facts.category is not Category.PRODUCT or facts.kind is not Kind.STREAM or facts.role == "interior":
            continue
        _, denominators = analysis.factors(node)
        for term in analysis.terms(node):
            streams = analysis.stream_factors(node, term)
            if not streams:
                continue  # a gate times constants, added to the rest: not a factor of a stream
            stream_bases = {analysis.base(a) for _, a in streams}
            for arg, source in term:
                gate = analysis[source]
                if gate.kind is not Kind.GATE or (arg, source) in denominators:
                    continue
                if gate.nondiff:  # a mask or rounding: zero gradient anyway, cut so the product reads as linear
                    if all(c.arg != arg or c.consumer is not node for c, _, _ in out):
                        out.append((Cut(source, node, arg), "gating", f"mask {_name(source)} multiplies a stream"))
                    continue
                family = gate.family or "gating"
                if family == "gating" and gate.gate_of is not None and gate.gate_of in stream_bases:
                    family = "nonlinearity"  # x * sigmoid(1.702 x): an activation the graph spells out
                if all(c.arg != arg or c.consumer is not node for c, _, _ in out):  # a factor of two terms: one cut
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
