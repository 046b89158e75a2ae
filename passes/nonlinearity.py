"""Nonlinearity pass: gate pruning for elementwise activations (docs/METHOD.md section 2).

Matches: every op the registry files as an activation, in any spelling (GELU exact and tanh,
SiLU, hard-swish, Mish, GLU, ELU, SELU, CELU, softplus, ReLU6, hardtanh, clamp...); a gate used as
an activation (tanh or erf feeding a stream, sigmoid values; the analysis resolves these), in
whatever spelling computes it (``exp(-softplus(z))`` is ``sigmoid(-z)``); and activations the
graph spells out as a product, such as QuickGELU's ``x * sigmoid(1.702 * x)``.
Rule: write f(x) = x * g(x) and detach g. An op with its own custom op (the registry's rule) is
computed by it (same forward kernel, rule as backward); any other gets the identity rule
g = (f(x) - f(0)) / x, f(0) being its bias. ReLU, LeakyReLU and max-pooling are already complete.
"""
from __future__ import annotations

import torch.fx as fx

from libragrad_fx.core import rules
from libragrad_fx.core.analysis import Analysis, Kind
from libragrad_fx.core.ops import Category

from . import SELF, Detach, Edit, LibraGradPass, Replace, Wrap, gate_cuts


class NonlinearityPass(LibraGradPass):
    family = "nonlinearity"

    def plan(self, analysis: Analysis) -> list[Edit]:
        edits: list[Edit] = []
        for node, facts in analysis.facts.items():
            if facts.kind is not Kind.STREAM or facts.op is None or facts.role in ("wrapped", "interior") or facts.issue:
                continue
            if facts.category is Category.ACTIVATION or facts.role == "activation":
                edit = self._activation(node, analysis)
                if edit is not None:
                    edits.append(edit)
        for cut, family, why in gate_cuts(analysis):
            if family == self.family:
                gate = analysis[cut.source].op.name
                edits.append(Detach(cut.consumer, self.family, f"x * {gate}(x).detach()",
                                    f"{why}: an activation written out as a product", cut))
        return edits

    def _activation(self, node: fx.Node, analysis: Analysis) -> Edit | None:
        facts = analysis[node]
        op, entry = facts.op, analysis.entry(node)
        why = f"{op.spelling} on a stream"
        if facts.role == "activation":
            why = f"{op.spelling} feeds a stream (not a product), so it acts as an activation"
        spec = entry.activation_of(op) if entry is not None else None
        if entry is not None and entry.rule is not None and facts.composite is None and not entry.rule.wrap:
            args = entry.rule.args(node, op)
            if args is not None:
                return Replace(node, self.family, spec.rule if spec else entry.rule.text, why, entry.rule.target, args)
        if spec is None:
            return None  # no rule for it: reported
        slope0 = spec.slope0 * facts.scale  # a composite computes f(scale * z): its slope in z
        return Wrap(node, self.family, spec.rule, why, rules.identity_rule, (op.input, SELF, spec.f0, slope0),
                    bias=spec.f0)
