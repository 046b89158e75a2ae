"""One name per op, whatever its spelling.

A GELU reaches the passes as ``nn.GELU`` (a module call), ``F.gelu`` / ``torch._C._nn.gelu``
(a function), ``x.gelu()`` (a method) or ``aten.gelu.default`` / ``aten.gelu_.default`` (an
exported graph). :func:`describe` maps every node to an :class:`OpCall`: a canonical name, the
arguments by their schema names (``input``, ``weight``, ``dim``, ...), and whether it mutates its
input. Passes match on ``OpCall.name`` and never on spellings.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.operator_schemas import normalize_function

__all__ = ["OpCall", "describe", "is_aten", "MODULE_OPS"]


@dataclass(frozen=True)
class OpCall:
    """What a node computes, independent of how it was written."""

    name: str
    """Canonical op name: ``gelu``, ``layer_norm``, ``mul``, ``scaled_dot_product_attention``..."""
    spelling: str
    """How the graph spells it: ``nn.GELU``, ``F.gelu``, ``Tensor.softmax``, ``aten.gelu.default``."""
    args: dict[str, Any] = field(default_factory=dict)
    """Arguments by schema name; for module calls the module's own parameters and settings."""
    inplace: bool = False
    module: nn.Module | None = None

    def tensor_args(self) -> list[tuple[str, fx.Node]]:
        """(name, node) for every argument that is a graph node, lists flattened."""
        out = []
        for key, value in self.args.items():
            if isinstance(value, fx.Node):
                out.append((key, value))
            elif isinstance(value, (list, tuple)):
                out.extend((f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, fx.Node))
        return out

    @property
    def input(self) -> Any:
        return self.args.get("input")


# Canonical names of ATen spellings whose name differs from the torch-level one.
_ALIASES = {
    "_softmax": "softmax",
    "_log_softmax": "log_softmax",
    "native_layer_norm": "layer_norm",
    "native_group_norm": "group_norm",
    "native_batch_norm": "batch_norm",
    "_native_batch_norm_legit": "batch_norm",
    "_native_batch_norm_legit_no_training": "batch_norm",
    "_native_batch_norm_legit_functional": "batch_norm",
    "_fused_rms_norm": "rms_norm",
    "_unsafe_view": "view",
    "_to_copy": "to",
    "_reshape_alias": "reshape",
    "linalg_vector_norm": "norm",
    "frobenius_norm": "norm",
    "true_divide": "div",
    "truediv": "div",
    "floordiv": "floor_divide",
    "swish": "silu",
    "hardswish": "hardswish",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "convolution": "conv",
    "_convolution": "conv",
    "conv_transpose1d": "conv_transpose",
    "conv_transpose2d": "conv_transpose",
    "conv_transpose3d": "conv_transpose",
    "avg_pool1d": "avg_pool",
    "avg_pool2d": "avg_pool",
    "avg_pool3d": "avg_pool",
    "adaptive_avg_pool1d": "avg_pool",
    "adaptive_avg_pool2d": "avg_pool",
    "adaptive_avg_pool3d": "avg_pool",
    "_adaptive_avg_pool2d": "avg_pool",
    "max_pool1d": "max_pool",
    "max_pool2d": "max_pool",
    "max_pool3d": "max_pool",
    "max_pool2d_with_indices": "max_pool",
    "adaptive_max_pool1d": "max_pool",
    "adaptive_max_pool2d": "max_pool",
    "bmm": "matmul",
    "mm": "matmul",
    "instance_norm": "instance_norm",
    "scaled_dot_product_attention": "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu": "scaled_dot_product_attention",
    "_scaled_dot_product_efficient_attention": "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention": "scaled_dot_product_attention",
    "upsample_nearest2d": "interpolate",
    "upsample_bilinear2d": "interpolate",
    "upsample_bicubic2d": "interpolate",
    "__getitem__": "getitem",
    "getattr": "getattr",
    "type_as": "to",
    "float": "to",
    "half": "to",
    "bfloat16": "to",
    "double": "to",
    "lift_fresh_copy": "clone",
    "contiguous": "clone",
    "square": "square",
    "clip": "clamp",
    "clamp_min": "clamp",
    "clamp_max": "clamp",
    "hardtanh": "hardtanh",
    "multi_head_attention_forward": "multi_head_attention",
    "iadd": "add",
    "imul": "mul",
    "isub": "sub",
    "itruediv": "div",
    "rsub": "rsub",
    "permute": "permute",
    "__and__": "logical_and",
    "__or__": "logical_or",
    "and_": "logical_and",
    "or_": "logical_or",
    "invert": "logical_not",
    "__invert__": "logical_not",
}

# torch.nn leaf modules the passes understand: type -> (canonical name, settings to read).
MODULE_OPS: dict[type, tuple[str, tuple[str, ...]]] = {
    nn.Linear: ("linear", ("weight", "bias")),
    nn.Bilinear: ("bilinear", ("weight", "bias")),
    nn.Conv1d: ("conv", ("weight", "bias", "padding_mode")),
    nn.Conv2d: ("conv", ("weight", "bias", "padding_mode")),
    nn.Conv3d: ("conv", ("weight", "bias", "padding_mode")),
    nn.ConvTranspose1d: ("conv_transpose", ("weight", "bias")),
    nn.ConvTranspose2d: ("conv_transpose", ("weight", "bias")),
    nn.ConvTranspose3d: ("conv_transpose", ("weight", "bias")),
    nn.LayerNorm: ("layer_norm", ("normalized_shape", "weight", "bias", "eps")),
    nn.GroupNorm: ("group_norm", ("num_groups", "weight", "bias", "eps")),
    nn.BatchNorm1d: ("batch_norm", ("weight", "bias", "running_mean", "running_var", "eps", "momentum")),
    nn.BatchNorm2d: ("batch_norm", ("weight", "bias", "running_mean", "running_var", "eps", "momentum")),
    nn.BatchNorm3d: ("batch_norm", ("weight", "bias", "running_mean", "running_var", "eps", "momentum")),
    nn.SyncBatchNorm: ("batch_norm", ("weight", "bias", "running_mean", "running_var", "eps", "momentum")),
    nn.InstanceNorm1d: ("instance_norm", ("weight", "bias", "eps")),
    nn.InstanceNorm2d: ("instance_norm", ("weight", "bias", "eps")),
    nn.InstanceNorm3d: ("instance_norm", ("weight", "bias", "eps")),
    nn.LocalResponseNorm: ("local_response_norm", ()),
    nn.RMSNorm: ("rms_norm", ("normalized_shape", "weight", "eps")),
    nn.GELU: ("gelu", ("approximate",)),
    nn.SiLU: ("silu", ()),
    nn.Mish: ("mish", ()),
    nn.Hardswish: ("hardswish", ()),
    nn.ReLU: ("relu", ()),
    nn.ReLU6: ("relu6", ()),
    nn.LeakyReLU: ("leaky_relu", ("negative_slope",)),
    nn.PReLU: ("prelu", ("weight",)),
    nn.RReLU: ("rrelu", ()),
    nn.ELU: ("elu", ("alpha",)),
    nn.CELU: ("celu", ("alpha",)),
    nn.SELU: ("selu", ()),
    nn.Softplus: ("softplus", ("beta", "threshold")),
    nn.Softsign: ("softsign", ()),
    nn.Tanhshrink: ("tanhshrink", ()),
    nn.Hardtanh: ("hardtanh", ("min_val", "max_val")),
    nn.Threshold: ("threshold", ("threshold", "value")),
    nn.Sigmoid: ("sigmoid", ()),
    nn.Hardsigmoid: ("hardsigmoid", ()),
    nn.LogSigmoid: ("log_sigmoid", ()),
    nn.Tanh: ("tanh", ()),
    nn.Softmax: ("softmax", ("dim",)),
    nn.Softmax2d: ("softmax", ()),
    nn.LogSoftmax: ("log_softmax", ("dim",)),
    nn.Softmin: ("softmin", ("dim",)),
    nn.GLU: ("glu", ("dim",)),
    nn.Identity: ("identity", ()),
    nn.Dropout: ("dropout", ("p",)),
    nn.Dropout1d: ("dropout", ("p",)),
    nn.Dropout2d: ("dropout", ("p",)),
    nn.Dropout3d: ("dropout", ("p",)),
    nn.AlphaDropout: ("dropout", ("p",)),
    nn.Flatten: ("flatten", ("start_dim", "end_dim")),
    nn.Unflatten: ("unflatten", ("dim", "unflattened_size")),
    nn.AvgPool1d: ("avg_pool", ()),
    nn.AvgPool2d: ("avg_pool", ()),
    nn.AvgPool3d: ("avg_pool", ()),
    nn.AdaptiveAvgPool1d: ("avg_pool", ()),
    nn.AdaptiveAvgPool2d: ("avg_pool", ()),
    nn.AdaptiveAvgPool3d: ("avg_pool", ()),
    nn.MaxPool1d: ("max_pool", ()),
    nn.MaxPool2d: ("max_pool", ()),
    nn.MaxPool3d: ("max_pool", ()),
    nn.AdaptiveMaxPool1d: ("max_pool", ()),
    nn.AdaptiveMaxPool2d: ("max_pool", ()),
    nn.AdaptiveMaxPool3d: ("max_pool", ()),
    nn.Upsample: ("interpolate", ("mode",)),
    nn.UpsamplingNearest2d: ("interpolate", ("mode",)),
    nn.UpsamplingBilinear2d: ("interpolate", ("mode",)),
    nn.PixelShuffle: ("pixel_shuffle", ()),
    nn.PixelUnshuffle: ("pixel_shuffle", ()),
    nn.ChannelShuffle: ("channel_shuffle", ()),
    nn.ZeroPad1d: ("pad", ()),
    nn.ZeroPad2d: ("pad", ()),
    nn.ZeroPad3d: ("pad", ()),
    nn.ConstantPad1d: ("pad", ("value",)),
    nn.ConstantPad2d: ("pad", ("value",)),
    nn.ConstantPad3d: ("pad", ("value",)),
    nn.ReflectionPad1d: ("pad", ()),
    nn.ReflectionPad2d: ("pad", ()),
    nn.ReplicationPad1d: ("pad", ()),
    nn.ReplicationPad2d: ("pad", ()),
    nn.Embedding: ("embedding", ("weight",)),
    nn.MultiheadAttention: ("multi_head_attention", ()),
    nn.LSTM: ("rnn", ()),
    nn.GRU: ("rnn", ()),
    nn.RNN: ("rnn", ()),
    nn.LSTMCell: ("rnn", ()),
    nn.GRUCell: ("rnn", ()),
}

# Positional names for calls whose schema match is ambiguous (operator.*, overloaded torch.*).
_POSITIONAL = {
    "einsum": ("equation", "operands"),
    "cat": ("tensors", "dim"),
    "stack": ("tensors", "dim"),
    "getitem": ("input", "index"),
    "getattr": ("input", "name"),
    "where": ("condition", "input", "other"),
    "clamp": ("input", "min", "max"),
    "pow": ("input", "exponent"),
    "neg": ("input",),
    "pos": ("input",),
    "abs": ("input",),
    "masked_fill": ("input", "mask", "value"),
    "index_fill": ("input", "dim", "index", "value"),
    "fill": ("input", "value"),
    "lerp": ("input", "end", "weight"),
    # torch.conv2d(x, w, b, ...) has a padding-as-string overload (NF-Net's standardised convolutions)
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "linear": ("input", "weight", "bias"),
    "scatter": ("input", "dim", "index", "src"),
}
_BINARY = ("input", "other", "alpha")


def is_aten(target: Any) -> bool:
    """True for ATen overloads, the spelling of exported graphs."""
    return isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))


def _canonical(raw: str) -> tuple[str, bool]:
    """Strip the in-place suffix and map ATen-only names onto torch-level names."""
    inplace = raw.endswith("_") and not raw.endswith("__") and raw not in _ALIASES
    name = raw[:-1] if inplace else raw
    return _ALIASES.get(name, name), inplace


def _function_name(target: Any) -> str:
    if is_aten(target):
        return target._opname if isinstance(target, torch._ops.OpOverload) else target.__name__
    return getattr(target, "__name__", type(target).__name__)


def _spelling(node: fx.Node, module: nn.Module | None) -> str:
    if node.op == "call_module":
        return f"nn.{type(module).__name__}" if type(module).__module__.startswith("torch.nn") else type(module).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target._opname}.{target._overloadname}" if target.namespace == "aten" else str(target)
    mod = getattr(target, "__module__", "") or ""
    short = {"torch.nn.functional": "F", "torch._C._nn": "F", "_operator": "operator", "builtins": ""}.get(mod, mod)
    return f"{short}.{_function_name(target)}" if short else _function_name(target)


def _normalize(target: Any, name: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments by schema name; falls back to positional names where schemas are ambiguous."""
    try:
        found = normalize_function(target, args, kwargs, normalize_to_only_use_kwargs=True)
    except Exception:  # ambiguous overloads, builtins without a schema
        found = None
    if found is not None:
        return {("input" if key == "self" else key): value for key, value in found.kwargs.items()}
    if name == "einsum":
        operands = args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = tuple(operands[0])
        return {"equation": args[0], "operands": list(operands), **kwargs}
    names = _POSITIONAL.get(name, _BINARY if len(args) >= 2 else ("input",))
    out = {}
    for i, value in enumerate(args):
        out[names[i] if i < len(names) else f"arg{i}"] = value
    out.update(kwargs)
    return out


# libragrad_fx.core.pruned_ops: the same op as the model's (same kernel, same argument names), with a
# backward that skips pruned work. Whoever reads a transformed graph sees the op it stands for.
PRUNED_AS = {"libragrad.linear_cols": "linear", "libragrad.attention": "scaled_dot_product_attention"}


def _is_rewritten(target: Any) -> bool:
    """An op or rule that libragrad-fx inserted (``torch.ops.libragrad.*``, ``libragrad_fx.core.rules.*``)."""
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace == "libragrad"
    return getattr(target, "__module__", "") == "libragrad_fx.core.rules"


def describe(node: fx.Node, root: nn.Module) -> OpCall | None:
    """The :class:`OpCall` of a ``call_*`` node; ``None`` for placeholders, attributes and outputs."""
    if node.op == "call_module" and node.target == "_guards_fn":  # torch.export's input checks
        return OpCall("_guards_fn", "_guards_fn", {})
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        entry = MODULE_OPS.get(type(module))
        name, settings = entry if entry is not None else (f"module:{type(module).__name__}", ())
        args: dict[str, Any] = {"input": node.args[0] if node.args else node.kwargs.get("input")}
        for extra_i, extra in enumerate(node.args[1:], start=1):
            args[f"arg{extra_i}"] = extra
        args.update({k: v for k, v in node.kwargs.items() if k != "input"})
        for attr in settings:
            if hasattr(module, attr):
                args[attr] = getattr(module, attr)
        inplace = bool(getattr(module, "inplace", False))
        return OpCall(name, _spelling(node, module), args, inplace, module)
    if node.op == "call_method":
        name, inplace = _canonical(node.target)
        function = getattr(torch, node.target, None)
        args = _normalize(function, name, node.args, dict(node.kwargs)) if callable(function) else _normalize(
            None, name, node.args, dict(node.kwargs)
        )
        return OpCall(name, _spelling(node, None), args, inplace)
    if node.op == "call_function" and _is_rewritten(node.target):
        spelling = f"libragrad.{_function_name(node.target)}"
        name = PRUNED_AS.get(spelling, spelling)
        return OpCall(name, spelling, _normalize(node.target, spelling, node.args, dict(node.kwargs)))
    if node.op == "call_function":
        raw = _function_name(node.target)
        if node.target is operator.getitem:
            raw = "getitem"
        name, inplace = _canonical(raw)
        if node.target in (operator.iadd, operator.imul, operator.isub, operator.itruediv):
            inplace = True
        if isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable:
            inplace = True
        kwargs = dict(node.kwargs)
        if name in ("relu", "silu", "hardswish", "hardsigmoid", "gelu", "elu", "celu", "selu", "relu6",
                    "leaky_relu", "hardtanh", "mish", "dropout", "threshold", "rrelu") and kwargs.get("inplace"):
            inplace = True
        args = _normalize(node.target, name, node.args, kwargs)
        return OpCall(name, _spelling(node, None), args, inplace)
    return None
