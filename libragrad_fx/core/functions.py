"""Custom ``torch.autograd.Function``s stay one call with their own backward, whichever capture runs.

Both captures would trace through a Function's ``forward`` and drop its ``backward``: a
straight-through estimator (``round`` forward, identity backward) would silently get a zero
gradient. While a capture runs, :func:`kept_whole` routes ``Function.apply`` of every Function
defined outside torch:

* torch.fx: into one ``call_function`` node that calls the Function's own ``apply``;
* torch.export: into one ``libragrad::autograd_function`` custom op. Its forward calls the
  Function (same values), its backward replays the Function's forward on the saved inputs and
  calls the Function's own backward on that (the exact gradient of a deterministic Function).
  The op names the Function by import path, so a saved program loads where that class imports.

Either way the node is opaque to the rules (the op registry reports it), and ``preset="vanilla"``
reproduces the model's own gradient.
"""
from __future__ import annotations

import contextlib
import importlib
import json
from typing import Any, Iterator

import torch
import torch.fx as fx
from torch import Tensor
from torch.utils import _pytree as pytree

__all__ = ["kept_whole", "autograd_function", "function_of", "name_of"]

_ORIGINAL = torch.autograd.Function.__dict__["apply"]
_FUNCTIONS: dict[str, type] = {}
_SINGLE: dict[str, bool] = {}
"""Key -> whether the Function returns one tensor (rather than a tuple): what the op's list unpacks to."""


def _user_function(cls: type) -> bool:
    return not (cls.__module__ or "").startswith("torch.")


def _apply(cls: type, *args: Any) -> Any:
    """The Function's own ``apply``."""
    return _ORIGINAL.__get__(None, cls)(*args)


_CALLERS: dict[type, Any] = {}


def _caller(cls: type) -> Any:
    """A plain function calling ``cls.apply`` (what an fx node can name as its target)."""
    if cls not in _CALLERS:
        def apply(*args: Any) -> Any:
            return cls.apply(*args)  # while a capture runs, the kept-whole form of the call

        apply.__qualname__ = f"{cls.__qualname__}.apply"
        apply.autograd_function = cls
        _CALLERS[cls] = apply
    return _CALLERS[cls]


def function_of(target: Any) -> type | None:
    """The custom autograd Function an fx node's target calls, if it is one."""
    return getattr(target, "autograd_function", None) if callable(target) else None


@contextlib.contextmanager
def kept_whole(capture: str) -> Iterator[None]:
    """While capturing (``"fx"`` or ``"export"``), keep every user-defined Function one call."""

    def apply(cls, *args, **kwargs):
        if not _user_function(cls) or kwargs:
            return _apply(cls, *args, **kwargs)
        if capture == "fx":
            proxy = next((a for a in pytree.tree_leaves(args) if isinstance(a, fx.Proxy)), None)
            if proxy is None:
                return _apply(cls, *args)
            return proxy.tracer.create_proxy("call_function", _caller(cls), args, {})
        return _through_op(cls, args)

    torch.autograd.Function.apply = classmethod(apply)
    try:
        yield
    finally:
        torch.autograd.Function.apply = _ORIGINAL


# --- torch.export: one custom op -----------------------------------------------------------------

def _key(cls: type, args: tuple) -> tuple[str, list[Tensor]]:
    """A JSON key naming the Function and its non-tensor arguments, and the tensor arguments."""
    tensors: list[Tensor] = []

    def slot(value: Any) -> Any:
        if isinstance(value, Tensor):
            tensors.append(value)
            return {"__tensor__": len(tensors) - 1}
        if isinstance(value, (list, tuple)):
            return {"__seq__": [slot(v) for v in value], "tuple": isinstance(value, tuple)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"torch.export keeps {cls.__qualname__} whole only with tensor, number, string or None "
                        f"arguments, got {type(value).__name__}")

    key = json.dumps({"function": f"{cls.__module__}:{cls.__qualname__}", "args": [slot(a) for a in args]})
    _FUNCTIONS[key] = cls
    return key, tensors


def name_of(key: Any) -> str:
    """The Function an ``autograd_function`` key names (``module:Qual.Name`` -> ``Qual.Name``)."""
    try:
        return json.loads(key)["function"].partition(":")[2]
    except (TypeError, ValueError, KeyError):
        return "autograd_function"


def _resolve(key: str, tensors: list[Tensor]) -> tuple[type, tuple]:
    data = json.loads(key)
    cls = _FUNCTIONS.get(key)
    if cls is None:  # a program loaded in another process: import the Function by its path
        module, _, qualname = data["function"].partition(":")
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        _FUNCTIONS[key] = cls

    def fill(value: Any) -> Any:
        if isinstance(value, dict) and "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if isinstance(value, dict) and "__seq__" in value:
            items = [fill(v) for v in value["__seq__"]]
            return tuple(items) if value["tuple"] else items
        return value

    return cls, tuple(fill(a) for a in data["args"])


def _outputs(value: Any) -> list[Tensor]:
    return [v for v in pytree.tree_leaves(value) if isinstance(v, Tensor)]


@torch.library.custom_op("libragrad::autograd_function", mutates_args=())
def _function_op(key: str, tensors: list[Tensor]) -> list[Tensor]:
    cls, args = _resolve(key, tensors)
    with torch.no_grad():
        out = _apply(cls, *args)
    return [t.clone() for t in _outputs(out)]  # a custom op may not return its inputs


@_function_op.register_fake
def _function_fake(key: str, tensors: list[Tensor]) -> list[Tensor]:
    cls, args = _resolve(key, tensors)
    out = _apply(cls, *args)
    _SINGLE[key] = isinstance(out, Tensor)
    return [torch.empty_like(t) for t in _outputs(out)]


def _setup(ctx, inputs, output) -> None:
    key, tensors = inputs
    ctx.key = key
    ctx.save_for_backward(*tensors)


def _backward(ctx, grads: list[Tensor]) -> tuple[None, list[Tensor | None]]:
    """The Function's own backward, on its forward replayed from the saved inputs."""
    saved = list(ctx.saved_tensors)
    leaves = [t.detach().requires_grad_(t.is_floating_point() or t.is_complex()) for t in saved]
    cls, args = _resolve(ctx.key, leaves)
    with torch.enable_grad():
        outs = _outputs(_apply(cls, *args))
    pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad and g is not None]
    wanted = [leaf for leaf in leaves if leaf.requires_grad]
    found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
                 if pairs and wanted else [None] * len(wanted))
    return None, [next(found) if leaf.requires_grad else None for leaf in leaves]


_function_op.register_autograd(_backward, setup_context=_setup)
autograd_function = torch.ops.libragrad.autograd_function.default
"""``autograd_function(key, tensors) -> list of outputs``: one custom Function call in an exported graph."""


def _through_op(cls: type, args: tuple) -> Any:
    key, tensors = _key(cls, args)
    outs = autograd_function(key, tensors)
    return outs[0] if _SINGLE.get(key, len(outs) == 1) else tuple(outs)
