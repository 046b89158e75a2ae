"""Normalization pass: detach the scale statistic (docs/METHOD.md section 2).

Matches: LayerNorm, RMSNorm, GroupNorm (modules, F.*, ATen), train-mode BatchNorm, InstanceNorm,
F.normalize; and hand-written norms, i.e. a statistic (std, var, norm, rsqrt, sqrt, reciprocal)
that multiplies or divides a stream, such as ``(x - mean) / sqrt(var + eps)``,
``x * rsqrt(mean(x^2) + eps)`` or CLIP's ``x / x.norm(dim=-1, keepdim=True)``.
Rule: the statistic is a constant for the backward; the mean subtraction stays (it is linear),
the weight is multiplicative and the bias a bias. Eval-mode BatchNorm is affine: untouched.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from libragrad_fx.core import rules
from libragrad_fx.core.analysis import Analysis, Kind
from libragrad_fx.core.ops import Category

from . import SELF, Detach, Edit, LibraGradPass, Replace, Wrap, gate_cuts, param

_FUSED_RULES = {
    "layer_norm": "(x - mean(x)) * rstd(x).detach() * w + b",
    "rms_norm": "x * rrms(x).detach() * w",
    "group_norm": "(x - mean_g(x)) * rstd_g(x).detach() * w + b",
}


class NormalizationPass(LibraGradPass):
    family = "normalization"

    def plan(self, analysis: Analysis) -> list[Edit]:
        edits: list[Edit] = []
        for node, facts in analysis.facts.items():
            if facts.category is Category.NORM and facts.kind is Kind.STREAM and facts.role != "wrapped":
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
        op = analysis[node].op
        if isinstance(node.target, torch._ops.OpOverload) and len(node.target._schema.returns) > 1:
            return None  # a tuple-returning spelling (native_layer_norm): reported, not rewritten
        args = op.args
        x = op.input
        name = op.name
        if name == "layer_norm":
            shape = [int(s) for s in _as_tuple(args["normalized_shape"])]
            weight, bias = param(node, op, "weight"), param(node, op, "bias")
            return Replace(node, self.family, _FUSED_RULES[name], f"{op.spelling} on a stream",
                           rules.CUSTOM_OPS[name], (x, shape, weight, bias, float(args.get("eps", 1e-5))))
        if name == "rms_norm":
            shape = [int(s) for s in _as_tuple(args["normalized_shape"])]
            eps = args.get("eps")
            return Replace(node, self.family, _FUSED_RULES[name], f"{op.spelling} on a stream",
                           rules.CUSTOM_OPS[name], (x, shape, param(node, op, "weight"),
                                                    None if eps is None else float(eps)))
        if name == "group_norm":
            return Replace(node, self.family, _FUSED_RULES[name], f"{op.spelling} on a stream",
                           rules.CUSTOM_OPS[name], (x, int(args["num_groups"]), param(node, op, "weight"),
                                                    param(node, op, "bias"), float(args.get("eps", 1e-5))))
        if name == "normalize":
            return Replace(node, self.family, "x / ||x||.detach()", f"{op.spelling} on a stream", rules.normalize,
                           (x, float(args.get("p", 2.0)), int(args.get("dim", 1)), float(args.get("eps", 1e-12))))
        if name == "batch_norm":  # the analysis files only train-mode BatchNorm under NORM
            return Wrap(node, self.family, "(x - mean_batch(x)) * rstd_batch(x).detach() * w + b",
                        f"{op.spelling} in training mode: batch statistics", rules.batch_norm_train,
                        (x, SELF, param(node, op, "weight"), float(args.get("eps", 1e-5))))
        if name == "instance_norm":
            return Wrap(node, self.family, "(x - mean(x)) * rstd(x).detach() * w + b", f"{op.spelling} on a stream",
                        rules.instance_norm, (x, SELF, param(node, op, "weight"), float(args.get("eps", 1e-5))))
        return None


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)
