"""Linear and piecewise-linear ops (complete as they are: any constant they add is a bias),
and piecewise-constant ones (zero gradient: a gate where they multiply, reported where they add)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import dissent
from .schema import INDICES, VALUE, Category, Op, Role, Rule, param

L, P, N = Category.LINEAR, Category.PIECEWISE, Category.NONDIFF
SEL, SHAPE, ADD, FACTOR, NONLINEAR, CHOICE = (Role.SELECTOR, Role.SHAPE, Role.ADDITIVE, Role.FACTOR, Role.NONLINEAR,
                                         Role.CHOICE)
_CHOICES = {"input": CHOICE, "other": CHOICE}
_BINARY = ("input", "other", "alpha")
_LINEAR_MAP = {"input": FACTOR, "weight": FACTOR, "bias": ADD}
"""y = x W^T + b: a product of input and weight (two input-dependent ones make it one), plus the bias."""


def _unary(fn, *args, **kwargs):
    return lambda t: (fn, (t(3, 4), *args), kwargs)


def _binary(fn, **kwargs):
    return lambda t: (fn, (t(3, 4), t(3, 4)), kwargs)


def _pools(kind: str) -> tuple[str, ...]:
    """avg_pool1d ... adaptive_avg_pool3d, and ATen's _adaptive_avg_pool2d / 3d."""
    return tuple(f"{prefix}{kind}{d}d" for prefix in ("", "adaptive_") for d in (1, 2, 3)) + tuple(
        f"_adaptive_{kind}{d}d" for d in (2, 3) if kind == "avg_pool")


def _scatter_reduce(call) -> Category:
    reduce = call.args.get("reduce")
    return {"sum": L, "mean": L, "amax": P, "amin": P}.get(reduce, Category.OPAQUE)


def _linear_dissent(node, call):
    if call.spelling.startswith("libragrad."):
        return None  # already rewritten (a pruned or dissent linear)
    return (call.input, param(node, call, "weight"), param(node, call, "bias"))


def _conv_dims(node, call) -> int | None:
    """1, 2 or 3: the spatial dimensions of a convolution call (None where it cannot be told)."""
    if call.module is not None:
        return call.module.weight.dim() - 2
    for name in ("stride", "padding", "dilation"):
        value = call.args.get(name)
        if isinstance(value, (list, tuple)):
            return len(value)
    for d in (1, 2, 3):
        if f"conv{d}d" in call.spelling:
            return d
    weight = call.args.get("weight")
    meta = getattr(weight, "meta", {}).get("val")
    return meta.dim() - 2 if meta is not None else None


def _conv_dissent(node, call):
    """(input, weight, bias, stride, padding, dilation, groups); None for a spelling the rule cannot
    take (transposed, padding given as a string other than 'valid', a padding mode other than zeros)."""
    args = call.args
    dims = _conv_dims(node, call)
    if call.spelling.startswith("libragrad.") or dims is None or args.get("transposed") is True \
            or args.get("padding_mode", "zeros") != "zeros":
        return None
    def setting(name: str, default):
        """A module's own setting, or a call's argument."""
        return getattr(call.module, name) if call.module is not None else args.get(name, default)

    padding = setting("padding", 0)
    if isinstance(padding, str):
        if padding != "valid":
            return None
        padding = 0

    def expand(value) -> list[int]:
        return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * dims

    return (call.input, param(node, call, "weight"), param(node, call, "bias"), expand(setting("stride", 1)),
            expand(padding), expand(setting("dilation", 1)), int(setting("groups", 1)))


ENTRIES: list[Op] = [
    # libragrad.*: what the rewrite inserts for it (a pruned backward, the dissent pixel readout): the same map
    Op("linear", L, spellings=("libragrad.linear_cols", "libragrad.linear_dissent"),
       modules={nn.Linear: ("weight", "bias")},
       roles=_LINEAR_MAP, positional=("input", "weight", "bias"),
       pixel=Rule(dissent.RULE, dissent.linear_dissent, _linear_dissent),
       example=lambda t: (F.linear, (t(3, 4), t(5, 4), t(5)), {})),
    Op("conv", L, spellings=("conv1d", "conv2d", "conv3d", "convolution", "_convolution",
                             "libragrad.conv_dissent"),
       modules={nn.Conv1d: ("weight", "bias", "padding_mode"), nn.Conv2d: ("weight", "bias", "padding_mode"),
                nn.Conv3d: ("weight", "bias", "padding_mode")},
       roles=_LINEAR_MAP,
       # torch.conv2d(x, w, b, ...) has a padding-as-string overload (NF-Net's standardised convolutions)
       positional=("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
       pixel=Rule(dissent.RULE, dissent.conv_dissent, _conv_dissent),
       example=lambda t: (F.conv2d, (t(2, 3, 5, 5), t(4, 3, 3, 3), t(4)), {})),
    Op("conv_transpose", L, spellings=("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
       modules={nn.ConvTranspose1d: ("weight", "bias"), nn.ConvTranspose2d: ("weight", "bias"),
                nn.ConvTranspose3d: ("weight", "bias")},
       roles=_LINEAR_MAP, example=lambda t: (F.conv_transpose2d, (t(2, 3, 4, 4), t(3, 2, 3, 3), t(2)), {})),
    Op("add", L, spellings=("iadd",), roles={"input": ADD, "other": ADD}, positional=_BINARY,
       example=_binary(torch.add)),
    Op("sub", L, spellings=("isub", "subtract"), roles={"input": ADD, "other": ADD}, positional=_BINARY,
       example=_binary(torch.sub)),
    Op("rsub", L, roles={"input": ADD, "other": ADD}, positional=_BINARY,
       example=lambda t: (torch.rsub, (t(3, 4), 2.0), {})),
    Op("neg", L, spellings=("negative",), positional=("input",), example=_unary(torch.neg)),
    Op("positive", L, spellings=("pos",), positional=("input",), example=_unary(torch.positive)),
    Op("sum", L, example=_unary(torch.sum, 1)),
    Op("nansum", L, example=_unary(torch.nansum, 1)),
    Op("mean", L, example=_unary(torch.mean, 1)),
    Op("cumsum", L, example=_unary(torch.cumsum, 1)),
    Op("trace", L, example=lambda t: (torch.trace, (t(4, 4),), {})),
    Op("diag", L, example=lambda t: (torch.diag, (t(4, 4),), {})),
    Op("sum_to_size", L, example=_unary(torch.Tensor.sum_to_size, 1, 4)),
    Op("avg_pool", L, spellings=_pools("avg_pool"),
       modules={m: () for m in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                                nn.AdaptiveAvgPool3d)},
       example=lambda t: (F.avg_pool2d, (t(2, 3, 4, 4), 2), {})),
    Op("interpolate", L, spellings=("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
                                    "upsample_linear1d", "upsample_bilinear2d", "upsample_bicubic2d",
                                    "upsample_trilinear3d", "_upsample_nearest_exact2d",
                                    "_upsample_bilinear2d_aa", "upsample"),
       modules={nn.Upsample: ("mode",), nn.UpsamplingNearest2d: ("mode",), nn.UpsamplingBilinear2d: ("mode",)},
       example=lambda t: (F.interpolate, (t(2, 3, 4, 4),), {"scale_factor": 2, "mode": "bilinear"})),
    Op("where", L, roles={"condition": SEL, "input": ADD, "other": ADD}, positional=("condition", "input", "other"),
       example=lambda t: (torch.where, (torch.tensor([True, False, True, False]), t(3, 4), t(3, 4)), {})),
    Op("masked_fill", L, roles={"mask": SEL, "value": ADD}, positional=("input", "mask", "value"),
       example=lambda t: (torch.masked_fill, (t(3, 4), torch.tensor([True, False, True, False]), 0.5), {})),
    Op("index_fill", L, roles={"index": SEL, "value": ADD}, positional=("input", "dim", "index", "value"),
       example=lambda t: (torch.index_fill, (t(3, 4), 1, torch.tensor([0, 2]), 0.5), {})),
    Op("fill", L, roles={"input": SHAPE, "value": ADD}, positional=("input", "value"),
       example=lambda t: (torch.fill, (t(3, 4), 0.5), {})),
    Op("zero", L, roles={"input": SHAPE}, example=lambda t: (lambda x: x.clone().zero_(), (t(3, 4),), {})),
    Op("index_add", L, roles={"input": ADD, "index": SEL, "source": ADD},
       example=lambda t: (torch.index_add, (t(3, 4), 1, torch.tensor([0, 2]), t(3, 2)), {})),
    Op("scatter_add", L, roles={"input": ADD, "index": SEL, "src": ADD},
       example=lambda t: (torch.scatter_add, (t(3, 4), 1, torch.tensor([[0, 2]] * 3), t(3, 2)), {})),
    Op("scatter", L, roles={"input": ADD, "index": SEL, "src": ADD, "value": ADD},
       positional=("input", "dim", "index", "src"),
       example=lambda t: (torch.scatter, (t(3, 4), 1, torch.tensor([[0, 2]] * 3), t(3, 2)), {})),
    Op("scatter_reduce", L, roles={"input": ADD, "index": SEL, "src": ADD}, refine=_scatter_reduce,
       example=lambda t: (torch.scatter_reduce, (t(3, 4), 1, torch.tensor([[0, 0]] * 3), t(3, 2), "sum"), {})),
    Op("index_put", L, roles={"input": ADD, "indices": SEL, "values": ADD},
       positional=("input", "indices", "values", "accumulate"),
       example=lambda t: (torch.index_put, (t(3, 4), (torch.tensor([0, 2]),), t(2, 4)), {})),
    Op("masked_scatter", L, roles={"input": ADD, "mask": SEL, "source": ADD},
       example=lambda t: (torch.masked_scatter, (t(3, 4), torch.tensor([True, False, True, False]), t(3, 4)), {})),
    Op("affine_grid", L, spellings=("affine_grid_generator",), roles={"size": SHAPE},
       example=lambda t: (F.affine_grid, (t(2, 2, 3), [2, 1, 4, 4]), {"align_corners": False})),
    # bilinear in the values at fixed coordinates; in the coordinates, not linear at all
    Op("grid_sample", L, spellings=("grid_sampler", "grid_sampler_2d", "grid_sampler_3d"),
       roles={"input": Role.INPUT, "grid": NONLINEAR},
       example=lambda t: (F.grid_sample, (t(2, 3, 4, 4), t(2, 3, 3, 2) * 0.5), {"align_corners": False})),
]

# --- piecewise linear: complete as they are ------------------------------------------------------
ENTRIES += [
    Op("relu", P, modules={nn.ReLU: ()}, functional=F.relu, elementwise=True, example=_unary(torch.relu)),
    Op("leaky_relu", P, modules={nn.LeakyReLU: ("negative_slope",)}, functional=F.leaky_relu, elementwise=True,
       example=_unary(F.leaky_relu, 0.1)),
    # max(0, x) + w min(0, x): a product of x and w where x < 0, a stream where x > 0
    Op("prelu", P, modules={nn.PReLU: ("weight",)}, positional=("input", "weight"), roles={"weight": Role.NONLINEAR},
       example=lambda t: (F.prelu, (t(3, 4), t(1).abs()), {})),
    Op("rrelu", P, modules={nn.RReLU: ()}, elementwise=True, example=_unary(F.rrelu)),
    Op("hardshrink", P, modules={nn.Hardshrink: ("lambd",)}, elementwise=True, example=_unary(F.hardshrink, 0.5)),
    Op("abs", P, spellings=("absolute",), positional=("input",), elementwise=True, example=_unary(torch.abs)),
    Op("max_pool", P, spellings=_pools("max_pool") + ("max_pool2d_with_indices", "max_pool3d_with_indices",
                                                     "max_pool1d_with_indices"),
       modules={m: () for m in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
                                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)},
       outputs=(VALUE, INDICES), example=lambda t: (F.max_pool2d, (t(2, 3, 4, 4), 2), {})),
    Op("amax", P, example=_unary(torch.amax, 1)),
    Op("amin", P, example=_unary(torch.amin, 1)),
    Op("max", P, outputs=(VALUE, INDICES), roles=_CHOICES, example=_unary(torch.max)),
    Op("min", P, outputs=(VALUE, INDICES), roles=_CHOICES, example=_unary(torch.min)),
    Op("maximum", P, roles=_CHOICES, example=_binary(torch.maximum)),
    Op("minimum", P, roles=_CHOICES, example=_binary(torch.minimum)),
    Op("fmax", P, roles=_CHOICES, example=_binary(torch.fmax)),
    Op("fmin", P, roles=_CHOICES, example=_binary(torch.fmin)),
    Op("sort", P, spellings=("msort",), outputs=(VALUE, INDICES), example=lambda t: (lambda x: x.sort(1)[0], (t(3, 4),), {})),
    Op("topk", P, outputs=(VALUE, INDICES), example=lambda t: (lambda x: x.topk(2, 1)[0], (t(3, 4),), {})),
    Op("cummax", P, outputs=(VALUE, INDICES), example=lambda t: (lambda x: x.cummax(1)[0], (t(3, 4),), {})),
    Op("cummin", P, outputs=(VALUE, INDICES), example=lambda t: (lambda x: x.cummin(1)[0], (t(3, 4),), {})),
    Op("kthvalue", P, outputs=(VALUE, INDICES), example=lambda t: (lambda x: x.kthvalue(2, 1)[0], (t(3, 4),), {})),
    Op("median", P, spellings=("nanmedian",), outputs=(VALUE, INDICES), example=_unary(torch.median)),
]

# --- piecewise constant: zero gradient -----------------------------------------------------------
_NONDIFF = ("eq", "ne", "gt", "ge", "lt", "le", "argmax", "argmin", "argsort", "sign", "sgn", "floor", "ceil",
            "round", "trunc", "fix", "isnan", "isinf", "isfinite", "isposinf", "isneginf", "floor_divide", "nonzero",
            "any", "all", "bucketize", "searchsorted", "heaviside", "bernoulli", "multinomial", "is_nonzero",
            "signbit", "one_hot", "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "bitwise_left_shift",
            "bitwise_right_shift", "equal", "isclose", "count_nonzero", "unique", "histc", "bincount")
_NONDIFF_SPELLINGS = {"floor_divide": ("floordiv",), "eq": ("__eq__",), "ne": ("__ne__",), "gt": ("__gt__",),
                      "ge": ("__ge__",), "lt": ("__lt__",), "le": ("__le__",), "not_equal": ()}
_LOGICAL = {"logical_and": ("__and__", "and_"), "logical_or": ("__or__", "or_"),
            "logical_xor": ("__xor__", "xor"), "logical_not": ("__invert__", "invert", "not_")}
_NONDIFF_EXAMPLES = {
    **{name: _unary(getattr(torch, name)) for name in ("sign", "sgn", "floor", "ceil", "round", "trunc", "fix", "isnan",
                                                      "isinf", "isfinite", "isposinf", "isneginf", "signbit",
                                                      "count_nonzero", "histc", "any", "all")},
    **{name: _binary(getattr(torch, name)) for name in ("eq", "ne", "gt", "ge", "lt", "le", "floor_divide", "heaviside",
                                                       "isclose", "logical_and", "logical_or", "logical_xor")},
    **{name: _unary(getattr(torch, name), 1) for name in ("argmax", "argmin", "argsort")},
    "logical_not": _unary(torch.logical_not),
    "bucketize": lambda t: (torch.bucketize, (t(3, 4), torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)), {}),
    "searchsorted": lambda t: (torch.searchsorted, (torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), t(3)), {}),
}
ENTRIES += [Op(name, N, spellings=_NONDIFF_SPELLINGS.get(name, ()), positional=_BINARY,
               example=_NONDIFF_EXAMPLES.get(name)) for name in _NONDIFF]
ENTRIES += [Op(name, N, spellings=spellings, positional=_BINARY, example=_NONDIFF_EXAMPLES.get(name))
            for name, spellings in _LOGICAL.items()]
# x - c * floor(x / c): slope one, plus a piecewise-constant offset that no bias accounts for
ENTRIES += [Op(name, Category.OPAQUE, spellings=spellings, positional=_BINARY,
               reason="x - c * floor(x / c): a stream plus a piecewise-constant offset, no rule",
               example=lambda t, fn=getattr(torch, name): (fn, (t(3, 4), 0.7), {}))
            for name, spellings in (("remainder", ("mod",)), ("fmod", ()))]
