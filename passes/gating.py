"""Gating pass: balance products of input-dependent factors (docs/METHOD.md section 2).

Matches: every op whose factor arguments hold two or more streams and that no other family
claimed, whatever its name: SwiGLU / GEGLU ``a * act(b)``, gMLP's ``u * (W v)``, focal
modulation's nested products, a linear map with an input-dependent weight, fused arithmetic
(``addcmul(x, a, b)``, ``baddbmm(x, a, b)``, ``lerp(a, b, w)``); and every gate factor of such a
product (squeeze-excite's ``x * sigmoid(fc(pool(x)))``) and input-dependent denominator (``a / b``).
Rule: detach the gate factors and denominators; a product of k remaining stream factors is
homogeneous of degree k, so its gradient is scaled by 1/k (SwiGLU: 1/2). Where the op also adds an
input-dependent argument (``addcmul``'s x) each stream factor's gradient is scaled instead, so the
additive part keeps its own; where its products share an argument (``lerp``) the registry's rule
balances each product term.
"""
from __future__ import annotations

import torch.fx as fx

from libragrad_fx.core import rules
from libragrad_fx.core.analysis import Analysis, Cut, Kind
from libragrad_fx.core.ops import Category

from . import SELF, Detach, Edit, LibraGradPass, Scale, Wrap, gate_cuts


class GatingPass(LibraGradPass):
    family = "gating"

    def plan(self, analysis: Analysis) -> list[Edit]:
        edits: list[Edit] = []
        for cut, family, why in gate_cuts(analysis):
            if family == self.family:
                edits.append(Detach(cut.consumer, self.family, "gate detached", why, cut))
        for node, facts in analysis.facts.items():
            if facts.category is not Category.PRODUCT or facts.kind is not Kind.STREAM or facts.degree == 1.0 \
                    or facts.role in ("wrapped", "interior") or facts.balance is None or facts.issue:
                continue
            family = _score_family(node, analysis) or self.family
            edits += _balance(node, analysis, family)
        return edits


def _balance(node: fx.Node, analysis: Analysis, family: str) -> list[Edit]:
    facts = analysis[node]
    k = facts.degree
    why = f"product of {k:g} input-dependent factors (homogeneous of degree {k:g})"
    if facts.balance == "output":
        return [Wrap(node, family, f"grad * 1/{k:g}", why, rules.scale_grad, (SELF, 1.0 / k))]
    degrees = [len(analysis.stream_factors(node, term)) for term in analysis.terms(node)]
    if facts.balance == "factors":
        out: list[Edit] = []
        for term, degree in zip(analysis.terms(node), degrees):
            if degree < 2:
                continue
            for arg, source in analysis.stream_factors(node, term):
                out.append(Scale(node, family, f"grad of each stream factor * 1/{degree}",
                                 f"{facts.op.spelling}: its product term has {degree} input-dependent factors "
                                 "(the additive part keeps its gradient)", Cut(source, node, arg), 1.0 / degree))
        return out
    entry = analysis.entry(node)
    # the rule takes 1/degree of each of the op's product terms after its own arguments
    scales = tuple(1.0 / max(d, 1) for spec, d in zip(entry.terms, degrees) if len(spec) > 1)
    return [Wrap(node, family, entry.rule.text, f"{facts.op.spelling}: {why}", entry.rule.target,
                 entry.rule.args(node, facts.op) + scales)]


def _score_family(node: fx.Node, analysis: Analysis) -> str | None:
    """A product that only feeds gates (q @ k^T into a softmax, x * x into a variance) belongs to
    that gate's family: under the full preset it carries no gradient, and an ablation of that
    family must leave it vanilla rather than balanced."""
    families = set()
    for user, _ in analysis.uses(node):
        facts = analysis[user]
        if user.op == "output" or facts.kind is not Kind.GATE:
            if facts.kind is Kind.STREAM and facts.category in (Category.STRUCTURAL, Category.LINEAR):
                inner = _score_family(user, analysis)
                if inner is None:
                    return None
                families.add(inner)
                continue
            if facts.category is Category.ATTENTION:
                families.add("attention")
                continue
            return None
        families.add(facts.family or "gating")
    return families.pop() if len(families) == 1 else None
