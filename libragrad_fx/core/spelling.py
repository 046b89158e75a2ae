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

from . import ops
from .functions import function_of, name_of

__all__ = ["OpCall", "describe", "is_aten"]


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


_BINARY = ("input", "other", "alpha")


def is_aten(target: Any) -> bool:
    """True for ATen overloads, the spelling of exported graphs."""
    return isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))


def _canonical(raw: str) -> tuple[str, bool]:
    """Strip the in-place suffix and map every spelling onto the registry's canonical name."""
    return ops.canonical(raw)


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
    entry = ops.lookup(name)
    names = entry.positional if entry is not None and entry.positional else (
        _BINARY if len(args) >= 2 else ("input",))
    out = {}
    for i, value in enumerate(args):
        out[names[i] if i < len(names) else f"arg{i}"] = value
    out.update(kwargs)
    return out


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
        entry = ops.module_op(type(module))
        name = entry.name if entry is not None else f"module:{type(module).__name__}"
        settings = entry.modules[type(module)] if entry is not None else ()
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
        args = _normalize(function if callable(function) else None, name, node.args, dict(node.kwargs))
        return OpCall(name, _spelling(node, None), args, inplace or args.get("inplace") is True)
    if node.op != "call_function":
        return None
    function = function_of(node.target)
    if function is not None:
        return OpCall("autograd_function", f"{function.__qualname__}.apply",
                      {f"arg{i}": a for i, a in enumerate(node.args)} | dict(node.kwargs))
    if _is_rewritten(node.target):
        spelling = f"{ops.REWRITTEN_NAMESPACE}.{_function_name(node.target)}"
        name, _ = _canonical(spelling)  # a pruned op reads as the op it stands for (libragrad.linear_cols: linear)
        args = _normalize(node.target, spelling, node.args, dict(node.kwargs))
        if name == "autograd_function":  # a custom Function kept whole by torch.export: say which
            spelling = f"{name_of(args.get('key'))}.apply"
        return OpCall(name, spelling, args)
    raw = "getitem" if node.target is operator.getitem else _function_name(node.target)
    name, inplace = _canonical(raw)
    if node.target in (operator.iadd, operator.imul, operator.isub, operator.itruediv):
        inplace = True
    if isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable:
        inplace = True
    args = _normalize(node.target, name, node.args, dict(node.kwargs))
    return OpCall(name, _spelling(node, None), args, inplace or args.get("inplace") is True)
