"""Elementwise nonlinearities: activations (made complete by detaching their gate) and gates
(constants wherever they multiply a stream).

An activation f(x) = x * g(x) + f(0) is rewritten by the nonlinearity rule: fused kernels (GELU,
SiLU, hard-swish, Mish, GLU) become custom ops with the same forward and the rule as backward,
every other one gets the identity rule g = (f(x) - f(0)) / x (guarded near 0 by f'(0)), f(0) being
its bias. A gate that reaches a stream other than as a factor acts as an activation when it has
identity-rule data (tanh in BERT's pooler, sigmoid values attended in iFormer); otherwise it is reported.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import rules  # noqa: F401  (registers the torch.ops.libragrad custom ops named below)
from .schema import MEAN, VALUE, Activation, Category, Op, Role, Rule

A, G = Category.ACTIVATION, Category.GATE

_IDENTITY = "x * (f(x) / x).detach()  (identity rule)"


def _unary(fn, positive: bool = False, *args, **kwargs):
    return lambda t: (fn, (t(3, 4, positive=positive), *args), kwargs)


def _fused(name: str, rule: str, **kw) -> Op:
    """An activation with its own custom op: the model's kernel forward, ``grad * g(x)`` backward."""
    target = getattr(torch.ops.libragrad, name).default
    return Op(name, A, elementwise=True, activation=kw.pop("activation", Activation(rule, slope0=0.5)),
              rule=Rule(rule, target, lambda node, call: (call.input,)), example=_unary(getattr(F, name)), **kw)


def _gelu_activation(call) -> Activation:
    if call.args.get("approximate", "none") == "tanh":
        return Activation("x * (0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))).detach()", slope0=0.5)
    return Activation("x * Phi(x).detach()", slope0=0.5)


def _clamp_zero(low, high) -> float:
    """f(0) of a clamp: 0 moved into [low, high]."""
    value = 0.0
    if isinstance(low, (int, float)):
        value = max(value, float(low))
    if isinstance(high, (int, float)):
        value = min(value, float(high))
    return value


def _clamp_activation(call) -> Activation:
    f0 = _clamp_zero(call.args.get("min"), call.args.get("max"))
    return Activation("x * ((clamp(x) - f(0)) / x).detach() + f(0)  (identity rule)" if f0 else
                      "x * (clamp(x) / x).detach()  (identity rule)", f0=f0)


def _clamp_category(call) -> Category:
    low, high = call.args.get("min"), call.args.get("max")
    return Category.PIECEWISE if low == 0 and high is None else A  # clamp(min=0) is relu


def _hardtanh_activation(call) -> Activation:
    return Activation("x * (hardtanh(x) / x).detach()  (identity rule)",
                      f0=_clamp_zero(call.args.get("min_val", -1.0), call.args.get("max_val", 1.0)))


def _threshold_activation(call) -> Activation:
    threshold, value = call.args.get("threshold", 0.0), call.args.get("value", 0.0)
    f0 = float(value) if isinstance(threshold, (int, float)) and threshold >= 0 else 0.0
    return Activation("x * ((f(x) - f(0)) / x).detach() + f(0)  (identity rule)", f0=f0)


def _softplus_activation(call) -> Activation:
    beta = call.args.get("beta", 1.0)
    return Activation("x * ((f(x) - f(0)) / x).detach() + f(0)  (identity rule)", f0=math.log(2.0) / beta,
                      slope0=0.5)


ENTRIES: list[Op] = [
    Op("gelu", A, modules={nn.GELU: ("approximate",)}, functional=F.gelu, elementwise=True,
       activation=_gelu_activation,
       rule=Rule("x * Phi(x).detach()", torch.ops.libragrad.gelu.default,
                 lambda node, call: (call.input, call.args.get("approximate", "none"))),
       example=_unary(F.gelu)),
    _fused("silu", "x * sigmoid(x).detach()", modules={nn.SiLU: ()}, functional=F.silu),
    _fused("hardswish", "x * (relu6(x + 3) / 6).detach()", modules={nn.Hardswish: ()}, functional=F.hardswish),
    _fused("mish", "x * tanh(softplus(x)).detach()", modules={nn.Mish: ()}, functional=F.mish,
           activation=Activation("x * tanh(softplus(x)).detach()", slope0=math.tanh(math.log(2.0)))),
    Op("glu", A, modules={nn.GLU: ("dim",)},
       rule=Rule("a * sigmoid(b).detach()", torch.ops.libragrad.glu.default,
                 lambda node, call: (call.input, int(call.args.get("dim", -1)))),
       example=_unary(F.glu)),
    Op("elu", A, modules={nn.ELU: ("alpha",)}, functional=F.elu, elementwise=True,
       activation=Activation("x * (f(x) / x).detach()  (identity rule, f'(0) = 1)"), example=_unary(F.elu)),
    Op("celu", A, modules={nn.CELU: ("alpha",)}, functional=F.celu, elementwise=True,
       activation=Activation("x * (f(x) / x).detach()  (identity rule, f'(0) = 1)"), example=_unary(F.celu)),
    Op("selu", A, modules={nn.SELU: ()}, functional=F.selu, elementwise=True,
       activation=Activation("x * (f(x) / x).detach()  (identity rule, f'(0) = 1.0507)", slope0=1.0507009873554805),
       example=_unary(F.selu)),
    Op("softplus", A, modules={nn.Softplus: ("beta", "threshold")}, elementwise=True,
       activation=_softplus_activation, example=_unary(F.softplus)),
    Op("relu6", A, modules={nn.ReLU6: ()}, functional=F.relu6, elementwise=True, bounded=True,
       activation=Activation("x * (relu6(x) / x).detach()  (identity rule)"), example=_unary(F.relu6)),
    Op("hardtanh", A, modules={nn.Hardtanh: ("min_val", "max_val")}, functional=F.hardtanh, elementwise=True,
       bounded=True, activation=_hardtanh_activation, example=_unary(F.hardtanh)),
    Op("clamp", A, spellings=("clip", "clamp_min", "clamp_max"), positional=("input", "min", "max"),
       roles={"input": Role.CHOICE, "min": Role.CHOICE, "max": Role.CHOICE},
       elementwise=True, bounded=lambda call: call.args.get("min") is not None and call.args.get("max") is not None,
       refine=_clamp_category, activation=_clamp_activation, example=_unary(torch.clamp, False, -0.5, 0.5)),
    Op("tanhshrink", A, modules={nn.Tanhshrink: ()}, elementwise=True,
       activation=Activation(_IDENTITY, slope0=0.0), example=_unary(F.tanhshrink)),
    Op("softshrink", A, modules={nn.Softshrink: ("lambd",)}, elementwise=True,
       activation=Activation(_IDENTITY, slope0=0.0), example=_unary(F.softshrink)),
    Op("threshold", A, modules={nn.Threshold: ("threshold", "value")}, functional=F.threshold, elementwise=True,
       activation=_threshold_activation, example=_unary(F.threshold, False, 0.1, 0.0)),
]


def _gate(name: str, f0: float | None = None, slope0: float = 1.0, positive: bool = False, **kw) -> Op:
    """An elementwise gate; with ``f0`` it can act as an activation (identity rule, f(0) its bias)."""
    activation = None
    if f0 is not None:
        rule = (f"x * ({name}(x) / x).detach()  (identity rule)" if f0 == 0 else
                f"x * (({name}(x) - {f0:g}) / x).detach() + {f0:g}  (identity rule)")
        activation = Activation(rule.replace("0.5", "1/2"), f0, slope0)
    fn = getattr(torch, name, None) or getattr(F, name, None)
    return Op(name, G, elementwise=True, activation=activation,
              example=kw.pop("example", _unary(fn, positive) if fn is not None else None), **kw)


ENTRIES += [
    # bounded, with an identity rule: activations where they feed a stream
    _gate("sigmoid", 0.5, 0.25, modules={nn.Sigmoid: ()}),
    _gate("hardsigmoid", 0.5, 1 / 6, modules={nn.Hardsigmoid: ()}, functional=F.hardsigmoid),
    _gate("tanh", 0.0, modules={nn.Tanh: ()}),
    _gate("erf", 0.0, 2 / math.sqrt(math.pi), spellings=("special_erf",)),
    _gate("softsign", 0.0, modules={nn.Softsign: ()}),
    _gate("atan", 0.0, spellings=("arctan",)), _gate("sin", 0.0), _gate("asinh", 0.0, spellings=("arcsinh",)),
    _gate("sinh", 0.0), _gate("atanh", 0.0, spellings=("arctanh",), example=lambda t: (torch.atanh, (t(3, 4) * 0.3,), {})),
    _gate("tan", 0.0), _gate("asin", 0.0, spellings=("arcsin",), example=lambda t: (torch.asin, (t(3, 4) * 0.3,), {})),
    _gate("expm1", 0.0), _gate("log1p", 0.0, positive=True),
    _gate("exp", 1.0), _gate("cos", 1.0, 0.0), _gate("cosh", 1.0, 0.0),
    # gates without an identity rule
    _gate("exp2"), _gate("log", positive=True), _gate("log2", positive=True), _gate("log10", positive=True),
    _gate("erfc"), _gate("erfinv", example=lambda t: (torch.erfinv, (t(3, 4) * 0.3,), {})),
    _gate("acos", spellings=("arccos",), example=lambda t: (torch.acos, (t(3, 4) * 0.3,), {})),
    _gate("acosh", spellings=("arccosh",), example=lambda t: (torch.acosh, (t(3, 4, positive=True) + 1,), {})),
    _gate("sinc"), _gate("logit", example=lambda t: (torch.logit, (torch.sigmoid(t(3, 4)),), {})),
    _gate("digamma", positive=True), _gate("lgamma", positive=True),
    _gate("log_sigmoid", spellings=("logsigmoid",), modules={nn.LogSigmoid: ()}, example=_unary(F.logsigmoid)),
    Op("xlogy", G, example=lambda t: (torch.xlogy, (t(3, 4), t(3, 4, positive=True)), {})),
    Op("atan2", G, spellings=("arctan2",), example=lambda t: (torch.atan2, (t(3, 4), t(3, 4)), {})),
    Op("hypot", G, example=lambda t: (torch.hypot, (t(3, 4), t(3, 4)), {})),
    Op("logaddexp", G, spellings=("logaddexp2",), example=lambda t: (torch.logaddexp, (t(3, 4), t(3, 4)), {})),
    Op("polar", G, example=lambda t: (torch.polar, (t(3, 4, positive=True), t(3, 4)), {})),
    Op("logsumexp", G, example=lambda t: (torch.logsumexp, (t(3, 4), 1), {})),
    Op("cosine_similarity", G, modules={nn.CosineSimilarity: ("dim", "eps")},
       example=lambda t: (F.cosine_similarity, (t(3, 4), t(3, 4)), {})),
    # normalised weight maps: the attention rule detaches them where they weight a stream
    Op("softmax", G, spellings=("_softmax", "special_softmax"), modules={nn.Softmax: ("dim",), nn.Softmax2d: ()},
       family="attention", example=lambda t: (torch.softmax, (t(3, 4), -1), {})),
    Op("log_softmax", G, spellings=("_log_softmax", "special_log_softmax"), modules={nn.LogSoftmax: ("dim",)},
       family="attention", example=lambda t: (torch.log_softmax, (t(3, 4), -1), {})),
    Op("softmin", G, modules={nn.Softmin: ("dim",)}, family="attention",
       example=lambda t: (F.softmin, (t(3, 4), -1), {})),
    # statistics and their reciprocals: the normalization rule detaches them
    *[_gate(name, family="normalization", positive=name in ("rsqrt", "sqrt"))
      for name in ("rsqrt", "sqrt", "reciprocal")],
    Op("var", G, family="normalization", example=lambda t: (torch.var, (t(3, 4), 1), {"keepdim": True})),
    Op("std", G, family="normalization", example=lambda t: (torch.std, (t(3, 4), 1), {"keepdim": True})),
    Op("var_mean", G, family="normalization", outputs=(VALUE, MEAN),
       example=lambda t: (lambda x: torch.var_mean(x, 1)[0], (t(3, 4),), {})),
    Op("std_mean", G, family="normalization", outputs=(VALUE, MEAN),
       example=lambda t: (lambda x: torch.std_mean(x, 1)[0], (t(3, 4),), {})),
    Op("norm", G, spellings=("linalg_vector_norm", "frobenius_norm", "linalg_norm", "vector_norm"),
       family="normalization", example=lambda t: (torch.norm, (t(3, 4),), {"dim": 1, "keepdim": True})),
]
