"""Gating pass: balance products of input-dependent factors (docs/METHOD.md section 2).

Matches: every elementwise product, matmul, einsum or power whose factors are input-dependent and
that no other family claimed: SwiGLU / GEGLU ``a * act(b)``, gMLP's ``u * (W v)``, focal
modulation's nested products, squeeze-excite ``x * sigmoid(fc(pool(x)))``, ``a / b``.
Rule: detach every gate factor (sigmoid, tanh, hard-sigmoid of another stream) and every
input-dependent denominator; a product of k remaining stream factors is homogeneous of degree k,
so its gradient is scaled by 1/k (SwiGLU: 1/2).
"""
from __future__ import annotations

import torch.fx as fx

from libragrad_fx.core import rules
from libragrad_fx.core.analysis import Analysis, Kind
from libragrad_fx.core.ops import Category

from . import SELF, Detach, Edit, LibraGradPass, Wrap, gate_cuts


class GatingPass(LibraGradPass):
    family = "gating"

    def plan(self, analysis: Analysis) -> list[Edit]:
        edits: list[Edit] = []
        for cut, family, why in gate_cuts(analysis):
            if family == self.family:
                edits.append(Detach(cut.consumer, self.family, "gate detached", why, cut))
        for node, facts in analysis.facts.items():
            if facts.category is not Category.PRODUCT or facts.kind is not Kind.STREAM or facts.degree == 1.0 \
                    or facts.role == "wrapped":
                continue
            family = _score_family(node, analysis) or self.family
            k = facts.degree
            edits.append(Wrap(node, family, f"grad * 1/{k:g}",
                              f"product of {k:g} input-dependent factors (homogeneous of degree {k:g})",
                              rules.scale_grad, (SELF, 1.0 / k)))
        return edits


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
