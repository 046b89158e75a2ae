"""Nonlinearity pass: gate pruning for elementwise activations (docs/METHOD.md section 2).

Matches: GELU (exact and tanh), SiLU, hard-swish and Mish in any spelling (module, function,
method, ATen); other elementwise nonlinearities on a stream (ELU, SELU, CELU, softplus, ReLU6,
hardtanh, clamp, tanh or erf used as an activation); and activations the graph spells out as a
product, such as QuickGELU's ``x * sigmoid(1.702 * x)``.
Rule: write f(x) = x * g(x) and detach g. Fused kernels become ``torch.ops.libragrad.*`` (same
forward kernel, rule as backward); other ops get the identity rule g = (f(x) - f(0)) / x.
ReLU, LeakyReLU and max-pooling are already complete and are left alone.
"""
from __future__ import annotations

import torch.fx as fx

from libragrad_fx.core import rules
from libragrad_fx.core.analysis import Analysis, Kind
from libragrad_fx.core.ops import ACTIVATIONS, Category

from . import SELF, Detach, Edit, LibraGradPass, Replace, Wrap, gate_cuts

_FUSED = ("gelu", "silu", "hardswish", "mish")


class NonlinearityPass(LibraGradPass):
    family = "nonlinearity"

    def plan(self, analysis: Analysis) -> list[Edit]:
        edits: list[Edit] = []
        for node, facts in analysis.facts.items():
            if facts.kind is not Kind.STREAM or facts.op is None or facts.role == "wrapped":
                continue
            if facts.category is Category.ACTIVATION or facts.role == "activation":
                edits.append(self._activation(node, analysis))
        for cut, family, why in gate_cuts(analysis):
            if family == self.family:
                gate = analysis[cut.source].op.name
                edits.append(Detach(cut.consumer, self.family, f"x * {gate}(x).detach()",
                                    f"{why}: an activation written out as a product", cut))
        return edits

    def _activation(self, node: fx.Node, analysis: Analysis) -> Edit:
        op = analysis[node].op
        x = op.input
        name = op.name
        if name in _FUSED:
            approximate = op.args.get("approximate", "none") if name == "gelu" else None
            spec = ACTIVATIONS["gelu_tanh" if approximate == "tanh" else name]
            args = (x, approximate) if name == "gelu" else (x,)
            return Replace(node, self.family, spec.gate, f"{op.spelling} on a stream",
                           rules.CUSTOM_OPS[name], args)
        if name == "glu":
            return Replace(node, self.family, "a * sigmoid(b).detach()", f"{op.spelling}: a gated linear unit",
                           rules.glu, (x, int(op.args.get("dim", -1))))
        spec = ACTIVATIONS.get(name)
        f0 = _value_at_zero(op) if name == "clamp" or spec is None else spec.f0
        slope0 = spec.slope0 if spec else 1.0
        rule = spec.gate if spec else "x * ((f(x) - f(0)) / x).detach() + f(0)  (identity rule)"
        why = f"{op.spelling} on a stream"
        if analysis[node].role == "activation":
            why = f"{op.spelling} feeds a stream (not a product), so it acts as an activation"
        return Wrap(node, self.family, rule, why, rules.identity_rule, (x, SELF, f0, slope0), bias=f0)


def _value_at_zero(op) -> float:
    """f(0) for a clamp whose lower bound is positive (its output at 0 is that bound)."""
    if op.name == "clamp":
        low, high = op.args.get("min"), op.args.get("max")
        value = 0.0
        if isinstance(low, (int, float)):
            value = max(value, float(low))
        if isinstance(high, (int, float)):
            value = min(value, float(high))
        return value
    return 0.0
