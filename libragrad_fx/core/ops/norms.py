"""Fused normalisations: the normalization rule detaches the scale statistic (docs/METHOD.md section 2).

LayerNorm, RMSNorm and GroupNorm become custom ops (the model's kernel forward, the rule as
backward); train-mode BatchNorm and InstanceNorm keep their kernel and take the gradient of a
surrogate with detached statistics; ``F.normalize`` divides by a detached norm. The mean
subtraction is linear and keeps its gradient; the weight multiplies, the bias is a bias.
Eval-mode BatchNorm is affine: linear, untouched. A tuple-returning ATen spelling
(``native_layer_norm``) has no rule and is reported.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import rules
from .schema import SELF, STATISTIC, VALUE, Category, Op, Role, Rule, param

NORM = Category.NORM
ADD, FACTOR, DENOM = Role.ADDITIVE, Role.FACTOR, Role.DENOMINATOR


def _single(node) -> bool:
    """A spelling that returns the normalised value alone (not ATen's (value, mean, rstd) tuple)."""
    return not (isinstance(node.target, torch._ops.OpOverload) and len(node.target._schema.returns) > 1)


def _shape(value) -> list[int]:
    return [int(s) for s in (value if isinstance(value, (list, tuple)) else (value,))]


def _layer_norm(node, call):
    if not _single(node):
        return None
    return (call.input, _shape(call.args["normalized_shape"]), param(node, call, "weight"), param(node, call, "bias"),
            float(call.args.get("eps", 1e-5)))


def _rms_norm(node, call):
    if not _single(node):
        return None
    eps = call.args.get("eps")
    return (call.input, _shape(call.args["normalized_shape"]), param(node, call, "weight"),
            None if eps is None else float(eps))


def _group_norm(node, call):
    if not _single(node):
        return None
    return (call.input, int(call.args["num_groups"]), param(node, call, "weight"), param(node, call, "bias"),
            float(call.args.get("eps", 1e-5)))


def _surrogate(node, call):
    """(x, y, weight, eps) for the rules that take a surrogate's gradient (BatchNorm in training, InstanceNorm)."""
    if not _single(node):
        return None
    return (call.input, SELF, param(node, call, "weight"), float(call.args.get("eps", 1e-5)))


def _bn_training(call) -> bool:
    if call.module is not None:
        return call.module.training or call.module.running_mean is None
    return bool(call.args.get("training", False)) or call.args.get("running_mean") is None


_AFFINE = {"input": FACTOR, "weight": FACTOR, "bias": ADD}
"""The normalised input times the weight, plus the bias."""
_BN_SETTINGS = ("weight", "bias", "running_mean", "running_var", "eps", "momentum")

ENTRIES: list[Op] = [
    Op("layer_norm", NORM, spellings=("native_layer_norm",),
       modules={nn.LayerNorm: ("normalized_shape", "weight", "bias", "eps")}, roles=_AFFINE,
       outputs=(VALUE, STATISTIC, STATISTIC),
       rule=Rule("(x - mean(x)) * rstd(x).detach() * w + b", torch.ops.libragrad.layer_norm.default, _layer_norm),
       example=lambda t: (F.layer_norm, (t(3, 4), (4,), t(4), t(4)), {})),
    Op("rms_norm", NORM, spellings=("_fused_rms_norm",), modules={nn.RMSNorm: ("normalized_shape", "weight", "eps")},
       roles={"input": FACTOR, "weight": FACTOR}, outputs=(VALUE, STATISTIC),
       rule=Rule("x * rrms(x).detach() * w", torch.ops.libragrad.rms_norm.default, _rms_norm),
       example=lambda t: (F.rms_norm, (t(3, 4), (4,), t(4)), {})),
    Op("group_norm", NORM, spellings=("native_group_norm",),
       modules={nn.GroupNorm: ("num_groups", "weight", "bias", "eps")}, roles=_AFFINE,
       outputs=(VALUE, STATISTIC, STATISTIC),
       rule=Rule("(x - mean_g(x)) * rstd_g(x).detach() * w + b", torch.ops.libragrad.group_norm.default, _group_norm),
       example=lambda t: (F.group_norm, (t(2, 4, 3), 2, t(4), t(4)), {})),
    Op("instance_norm", NORM, modules={nn.InstanceNorm1d: ("weight", "bias", "eps"),
                                       nn.InstanceNorm2d: ("weight", "bias", "eps"),
                                       nn.InstanceNorm3d: ("weight", "bias", "eps")},
       roles=_AFFINE,
       rule=Rule("(x - mean(x)) * rstd(x).detach() * w + b", rules.instance_norm, _surrogate, wrap=True),
       example=lambda t: (F.instance_norm, (t(2, 4, 5),), {})),
    Op("normalize", NORM,
       rule=Rule("x / ||x||.detach()", torch.ops.libragrad.normalize.default,
                 lambda node, call: (call.input, float(call.args.get("p", 2.0)), int(call.args.get("dim", 1)),
                                     float(call.args.get("eps", 1e-12)))),
       example=lambda t: (F.normalize, (t(3, 4),), {"dim": -1})),
    Op("local_response_norm", NORM, modules={nn.LocalResponseNorm: ()},
       example=lambda t: (F.local_response_norm, (t(2, 4, 5), 2), {})),
    # eval-mode BatchNorm is affine (linear); in training it normalises with batch statistics
    Op("batch_norm", Category.LINEAR,
       spellings=("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                  "_native_batch_norm_legit_functional"),
       modules={nn.BatchNorm1d: _BN_SETTINGS, nn.BatchNorm2d: _BN_SETTINGS, nn.BatchNorm3d: _BN_SETTINGS,
                nn.SyncBatchNorm: _BN_SETTINGS},
       roles={"input": FACTOR, "weight": FACTOR, "bias": ADD, "running_mean": ADD, "running_var": DENOM},
       outputs=(VALUE, STATISTIC, STATISTIC),
       refine=lambda call: NORM if _bn_training(call) else Category.LINEAR,
       rule=Rule("(x - mean_batch(x)) * rstd_batch(x).detach() * w + b", rules.batch_norm_train, _surrogate,
                 wrap=True),
       example=lambda t: (F.batch_norm, (t(3, 4), t(4), t(4, positive=True), t(4), t(4)), {})),
]
