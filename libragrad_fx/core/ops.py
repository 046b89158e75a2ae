"""What each canonical op is, as far as FullGrad-completeness is concerned.

The analysis and the passes consult this table only; they never branch on spellings
(see :mod:`libragrad_fx.core.spelling`). Categories follow docs/METHOD.md sections 1-2:

* structural, linear, piecewise: already locally complete (a bias, if any, is explicit);
* activation: elementwise f(x) = x * g(x), made complete by detaching g (nonlinearity pass);
* gate: bounded or statistical functions, constants for whoever multiplies by them;
* product: products and quotients of input-dependent factors (gating rule);
* norm, attention: fused kernels rewritten as a whole;
* nondiff: piecewise-constant ops whose gradient is zero anyway (masks, indices).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

__all__ = ["Category", "ActivationSpec", "category_of", "ACTIVATIONS", "GATE_FAMILY", "ZERO_PRESERVING_GATES",
           "OFFSET_GATES"]


class Category(Enum):
    STRUCTURAL = "structural"
    LINEAR = "linear"
    PIECEWISE = "piecewise"
    ACTIVATION = "activation"
    GATE = "gate"
    NONDIFF = "nondiff"
    PRODUCT = "product"
    NORM = "norm"
    ATTENTION = "attention"
    SHAPE = "shape"
    FACTORY = "factory"
    SOURCE = "source"
    DETACH = "detach"
    REWRITTEN = "rewritten"
    OPAQUE = "opaque"


_TABLE: dict[Category, tuple[str, ...]] = {
    Category.STRUCTURAL: (
        "view", "reshape", "permute", "transpose", "t", "flatten", "unflatten", "squeeze", "unsqueeze",
        "expand", "expand_as", "repeat", "repeat_interleave", "tile", "clone", "getitem", "cat", "concat",
        "concatenate", "stack", "hstack", "vstack", "chunk", "split", "split_with_sizes", "unbind",
        "tensor_split", "narrow", "select", "slice", "roll", "flip", "movedim", "moveaxis", "swapaxes",
        "to", "type", "identity", "dropout", "alias", "view_as", "reshape_as", "unfold", "fold", "pixel_shuffle",
        "pixel_unshuffle", "channel_shuffle", "index_select", "gather", "take_along_dim", "diagonal", "tril",
        "triu", "as_strided", "copy", "index", "expand_copy", "permute_copy", "view_copy", "squeeze_copy",
        "unsqueeze_copy", "slice_copy", "select_copy", "broadcast_to", "ravel", "im2col", "col2im", "pad",
        "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d",
        "feature_dropout", "alpha_dropout", "native_dropout", "unsafe_split", "unsafe_chunk",
        "split_copy", "unbind_copy", "alias_copy", "masked_select", "contiguous", "clone", "resize",
        "resolve_conj", "resolve_neg", "dropout1d", "dropout2d", "dropout3d", "zero_pad2d", "flatten_copy",
    ),
    Category.LINEAR: (
        "linear", "conv", "conv_transpose", "add", "sub", "rsub", "neg", "sum", "mean", "cumsum", "avg_pool",
        "batch_norm", "interpolate", "where", "masked_fill", "addmm", "addbmm", "baddbmm", "addmv", "index_add",
        "scatter_add", "trace", "diag", "sum_to_size", "nansum", "lerp", "positive", "pos", "im2col",
        "scatter", "index_put", "masked_scatter", "fill", "zero", "affine_grid_generator", "grid_sampler",
        "grid_sample", "upsample_nearest1d", "upsample_linear1d", "bilinear_upsample",
    ),
    Category.PIECEWISE: (
        "relu", "leaky_relu", "prelu", "rrelu", "max_pool", "amax", "amin", "max", "min", "maximum", "minimum",
        "fmax", "fmin", "abs", "sort", "topk", "cummax", "cummin", "kthvalue", "median", "hardshrink",
    ),
    Category.NONDIFF: (
        "eq", "ne", "gt", "ge", "lt", "le", "argmax", "argmin", "argsort", "sign", "sgn", "floor", "ceil",
        "round", "trunc", "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "logical_and", "logical_or",
        "logical_not", "logical_xor", "isnan", "isinf", "isfinite", "floor_divide", "remainder", "fmod",
        "one_hot", "nonzero", "any", "all", "bucketize", "searchsorted", "heaviside", "bernoulli", "multinomial",
        "randint_like", "is_nonzero", "__and__", "__or__", "__xor__", "not_", "invert", "signbit",
    ),
    Category.SHAPE: (
        "size", "dim", "numel", "shape", "getattr", "sym_size", "sym_numel", "sym_stride", "stride", "_assert",
        "_assert_is_none", "assert", "len", "is_floating_point", "element_size", "_assert_tensor_metadata",
        "sym_constrain_range_for_size", "_assert_scalar", "sym_constrain_range", "item", "is_contiguous",
        "data_ptr", "get_device", "_local_scalar_dense", "floordiv", "mod", "sym_float", "sym_int", "sym_max",
        "sym_min", "sym_not", "sym_sqrt", "truth", "contains", "is_", "is_not", "_guards_fn",
    ),
    Category.FACTORY: (
        "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros", "new_ones",
        "new_full", "new_empty", "new_tensor", "zeros", "ones", "arange", "full", "empty", "eye", "linspace",
        "tensor", "scalar_tensor", "randn", "rand", "randperm", "logspace", "meshgrid", "empty_strided",
        "empty_permuted", "as_tensor", "from_numpy",
    ),
    Category.ACTIVATION: (
        "gelu", "silu", "hardswish", "mish", "elu", "celu", "selu", "softplus", "relu6", "hardtanh", "clamp",
        "tanhshrink", "softshrink", "threshold", "glu", "quick_gelu",
    ),
    Category.GATE: (
        "sigmoid", "hardsigmoid", "tanh", "softmax", "log_softmax", "softmin", "exp", "exp2", "expm1", "log",
        "log1p", "log2", "log10", "rsqrt", "sqrt", "reciprocal", "var", "std", "var_mean", "std_mean", "norm",
        "erf", "erfc", "erfinv", "sin", "cos", "tan", "atan", "asin", "acos", "sinh", "cosh", "asinh", "atanh",
        "softsign", "logsumexp", "log_sigmoid", "cosine_similarity", "logit", "xlogy", "digamma", "lgamma",
        "atan2", "hypot", "sinc", "logaddexp", "special_erf", "polar",
    ),
    Category.PRODUCT: (
        "mul", "matmul", "einsum", "div", "outer", "dot", "vdot", "kron", "cross", "addcmul", "addcdiv", "pow",
        "square", "bilinear", "tensordot", "prod", "cumprod", "float_power", "multiply", "divide",
    ),
    Category.NORM: ("layer_norm", "group_norm", "rms_norm", "instance_norm", "local_response_norm", "normalize"),
    Category.ATTENTION: ("scaled_dot_product_attention",),
    Category.SOURCE: ("embedding",),
    # a value the backward treats as a constant: the user's own .detach() and the rules' cuts
    Category.DETACH: ("detach", "stop_gradient"),
    Category.OPAQUE: ("multi_head_attention", "rnn", "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell"),
}
_CATEGORY = {name: category for category, names in _TABLE.items() for name in names}


# What libragrad-fx itself inserts (torch.ops.libragrad.* and libragrad_fx.core.rules.*): already LibraGrad.
REWRITTEN_NAMESPACE = "libragrad"


def category_of(name: str) -> Category:
    """The category of a canonical op name; unknown names (and unknown modules) are OPAQUE."""
    if name.startswith(REWRITTEN_NAMESPACE + "."):
        return Category.REWRITTEN
    return _CATEGORY.get(name, Category.OPAQUE)


@dataclass(frozen=True)
class ActivationSpec:
    """f(x) = x * g(x) + f(0): the gate g the nonlinearity rule detaches, and f's value and slope at 0."""

    gate: str
    """The rule, as docs/METHOD.md writes it."""
    f0: float = 0.0
    slope0: float = 1.0


ACTIVATIONS: dict[str, ActivationSpec] = {
    "gelu": ActivationSpec("x * Phi(x).detach()", slope0=0.5),
    "gelu_tanh": ActivationSpec("x * (0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))).detach()", slope0=0.5),
    "silu": ActivationSpec("x * sigmoid(x).detach()", slope0=0.5),
    "hardswish": ActivationSpec("x * (relu6(x + 3) / 6).detach()", slope0=0.5),
    "mish": ActivationSpec("x * tanh(softplus(x)).detach()", slope0=math.tanh(math.log(2.0))),
    "elu": ActivationSpec("x * (f(x) / x).detach()  (identity rule, f'(0) = 1)"),
    "celu": ActivationSpec("x * (f(x) / x).detach()  (identity rule, f'(0) = 1)"),
    "selu": ActivationSpec("x * (f(x) / x).detach()  (identity rule, f'(0) = 1.0507)", slope0=1.0507009873554805),
    "softplus": ActivationSpec("x * ((f(x) - f(0)) / x).detach() + f(0)  (identity rule)", f0=math.log(2.0), slope0=0.5),
    "relu6": ActivationSpec("x * (relu6(x) / x).detach()  (identity rule)"),
    "hardtanh": ActivationSpec("x * (hardtanh(x) / x).detach()  (identity rule)"),
    "clamp": ActivationSpec("x * (clamp(x) / x).detach()  (identity rule)"),
    "tanhshrink": ActivationSpec("x * (f(x) / x).detach()  (identity rule)", slope0=0.0),
    "softshrink": ActivationSpec("x * (f(x) / x).detach()  (identity rule)", slope0=0.0),
    "threshold": ActivationSpec("x * (f(x) / x).detach()  (identity rule)"),
    "tanh": ActivationSpec("x * (tanh(x) / x).detach()  (identity rule)"),
    "erf": ActivationSpec("x * (erf(x) / x).detach()  (identity rule)", slope0=2 / math.sqrt(math.pi)),
    "softsign": ActivationSpec("x * (softsign(x) / x).detach()  (identity rule)"),
    "atan": ActivationSpec("x * (atan(x) / x).detach()  (identity rule)"),
    "sin": ActivationSpec("x * (sin(x) / x).detach()  (identity rule)"),
    "asinh": ActivationSpec("x * (asinh(x) / x).detach()  (identity rule)"),
    "sinh": ActivationSpec("x * (sinh(x) / x).detach()  (identity rule)"),
    "atanh": ActivationSpec("x * (atanh(x) / x).detach()  (identity rule)"),
    "sigmoid": ActivationSpec("x * ((sigmoid(x) - 1/2) / x).detach() + 1/2  (identity rule)", f0=0.5, slope0=0.25),
    "hardsigmoid": ActivationSpec("x * ((hardsigmoid(x) - 1/2) / x).detach() + 1/2  (identity rule)", f0=0.5,
                                  slope0=1 / 6),
    "exp": ActivationSpec("x * ((exp(x) - 1) / x).detach() + 1  (identity rule)", f0=1.0),
}

# Gates with f(0) = 0: where one of them feeds a stream additively it is an activation
# (e.g. BERT's pooler tanh), and the identity rule makes it complete.
ZERO_PRESERVING_GATES = frozenset({"tanh", "erf", "softsign", "atan", "sin", "asinh", "sinh", "atanh"})
# Elementwise gates with f(0) != 0 (iFormer's sigmoid values): as activations the identity rule
# keeps f(0) as the op's bias, as it does for softplus.
OFFSET_GATES = frozenset({"sigmoid", "hardsigmoid", "exp"})

# Which family's rule detaches a gate, by the op that made it a gate (docs/METHOD.md section 2).
GATE_FAMILY: dict[str, str] = {
    **{name: "attention" for name in ("softmax", "log_softmax", "softmin")},
    **{name: "normalization" for name in ("rsqrt", "sqrt", "reciprocal", "var", "std", "var_mean", "std_mean", "norm")},
}
