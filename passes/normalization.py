"""Normalization pass: detach the scale statistic (docs/METHOD.md section 2).

Matches: every op the registry files as a norm (LayerNorm, RMSNorm, GroupNorm, InstanceNorm,
train-mode BatchNorm, F.normalize; modules, F.*, ATen) and hand-written norms, i.e. a statistic
(std, var, norm, rsqrt, sqrt, reciprocal) that multiplies or divides a stream, such as
``(x - mean) / sqrt(var + eps)``, ``x * rsqrt(mean(x^2) + eps)`` or CLIP's ``x / x.norm(dim=-1, keepdim=True)``.
Rule: the statistic is a constant for the backward (the registry's rule for a fused norm, a
detach for a hand-written one); the mean subtraction stays (it is linear), the weight is
multiplicative and the bias a bias. Eval-mode BatchNorm is affine: untouched.
"""
from __future__ import annotations

import torch.fx as fx

from libragrad_fx.core.analysis import Analysis, Kind
from libragrad_fx.core.ops import Category

from . import Detach, Edit, LibraGradPass, Replace, Wrap, gate_cuts


class NormalizationPass(LibraGradPass):
    family = "normalization"

    def plan(self, analysis: Analysis) -> list[Edit]:
        edits: list[Edit] = []
        for node, facts in analysis.facts.items():
            if facts.category is Category.NORM and facts.kind is Kind.STREAM and not facts.issue \
                    and facts.role not in ("wrapped", "interior"):
                edit = self._fused(node, analysis)
                if edit is not None:
                    edits.append(edit)
        for cut, family, why in gate_cuts(analysis):
            if family == self.family:
                stat = analysis[cut.source].op.name if analysis[cut.source].op else cut.source.name
                edits.append(Detach(cut.consumer, self.family, f"statistic {stat} detached",
                                    f"{why}: a hand-written normalization", cut))
        return edits

    def _fused(self, node: fx.Node, analysis: Analysis) -> Edit | None:
        """The registry's rule for this norm; None where this spelling takes none (reported)."""
        op, entry = analysis[node].op, analysis.entry(node)
        rule = entry.rule if entry is not None else None
        args = rule.args(node, op) if rule is not None else None
        if args is None:
            return None
        why = f"{op.spelling} on a stream"
        if op.name == "batch_norm":
            why = f"{op.spelling} in training mode: batch statistics"
        if rule.wrap:
            return Wrap(node, self.family, rule.text, why, rule.target, args)
        return Replace(node, self.family, rule.text, why, rule.target, args)
