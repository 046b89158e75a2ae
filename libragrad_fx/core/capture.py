"""Capture a model as an fx graph: ``symbolic_trace``, timm's leaf-aware trace, then ``torch.export``.

Order of attempts (``../shared/notes/capturing-timm.md`` has the measurements behind it):

1. ``torch.fx`` symbolic tracing, with every defaulted non-tensor argument of ``forward`` made
   concrete (``attn_mask=None``, ``is_causal=False``): every op visible, torch-level spelling.
2. For timm models, the same with timm's own FX leaf modules and autowrapped functions.
3. ``torch.export`` (non-strict) with a dynamic batch dimension: every op visible, ATen spelling.

A traced graph that still hides computation inside a leaf module (``nn.MultiheadAttention``,
timm's ``GPSA``, ...) is exported instead when example inputs are available; without them the
leaf is kept and reported as unclassified. A custom ``torch.autograd.Function`` is kept as one
call with its own backward by either capture (:mod:`libragrad_fx.core.functions`), and reported. Capture never changes the user's model: mutable
Python state (e.g. LeViT's ``attention_bias_cache``) is emptied for the trace and restored after.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.fx as fx
import torch.nn as nn

from . import ops
from .functions import kept_whole
from .nested import inline_autocast_regions
from .recurrent import unroll_recurrent
from .rules import GRAPH_FUNCTIONS

__all__ = ["Capture", "CaptureError", "capture", "export_program", "quiet_export", "opaque_leaves", "METHODS"]


class CaptureError(RuntimeError):
    """Neither torch.fx nor torch.export could capture the model."""


@dataclass
class Capture:
    gm: fx.GraphModule
    method: str
    """``fx``, ``fx+timm-leaves`` or ``export``."""
    input_names: list[str]
    notes: list[str] = field(default_factory=list)


def _concrete_defaults(model: nn.Module) -> dict[str, Any]:
    """forward's defaulted arguments that are settings, not tensors: trace them as constants."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    out = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not p.empty and (p.default is None or isinstance(p.default, (bool, int, float, str))):
            out[p.name] = p.default
    return out


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Empty per-module caches (dicts of tensors) for the capture and put everything back after.

    Tracing runs ``forward`` with proxies or fake tensors; a module that memoises tensors in a
    dict would otherwise keep those (stale proxies), or bake a cached eager tensor into the graph
    as a constant that no gradient reaches.
    """
    saved: list[tuple[nn.Module, str, dict]] = []
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, dict) and not name.startswith("_") and value and all(
                    isinstance(v, torch.Tensor) for v in value.values()):
                saved.append((module, name, value))
                setattr(module, name, {})
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _user_frame(error: BaseException) -> str:
    """The innermost frame of the model's own code in the traceback: where the construct is."""
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if f"{os.sep}torch{os.sep}" not in f.filename and "libragrad_fx" not in f.filename
            and "torchvision" not in f.filename and "<" not in f.filename]
    return f"{os.path.basename(mine[-1].filename)}:{mine[-1].lineno} `{mine[-1].line}`" if mine else ""


def _first_error_line(error: BaseException) -> str:
    """One line: the error's first line and the model code that raised it."""
    text = f"{type(error).__name__}: {error}".strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    first = first if len(first) <= 240 else first[:237] + "..."
    where = _user_frame(error)
    if not where:
        where = next((line for line in lines if line.startswith("File ") or ".py\", line" in line), "")
    return f"{first} at {where}" if where and where not in first else first


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """torch.export logs whole graphs when a guard fails, and prints the partial graph of a failed
    export to stderr; the error we raise says what matters, in one line."""
    loggers = [logging.getLogger(name) for name in ("torch.fx.experimental.symbolic_shapes", "torch._dynamo",
                                                     "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR + 10)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _trace_fx(model: nn.Module, concrete_args: dict[str, Any], leaves: bool) -> fx.GraphModule:
    if leaves:
        import timm.layers
        from torchvision.models.feature_extraction import LeafModuleAwareTracer

        tracer = LeafModuleAwareTracer(leaf_modules=list(timm.layers.get_notrace_modules()),
                                       autowrap_functions=tuple(timm.layers.get_notrace_functions()) + GRAPH_FUNCTIONS)
    else:
        tracer = fx.Tracer(autowrap_functions=GRAPH_FUNCTIONS)
    before = set(vars(model))
    try:
        with kept_whole("fx"):
            graph = tracer.trace(model, concrete_args=concrete_args or None)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    finally:
        # the tracer stores tensors made during forward (RoPE tables...) on the model as
        # `_tensor_constantN`; the GraphModule has its own copy, and the user's model stays as it was
        for added in set(vars(model)) - before:
            delattr(model, added)


def _record_input_types(gm: fx.GraphModule, inputs: tuple) -> None:
    """Give traced placeholders the example inputs' dtypes and shapes (meta tensors), as torch.export's
    carry theirs: the analysis reads an integer input (token ids, a mask) as a constant from them."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, value in zip(placeholders, inputs):
        if isinstance(value, torch.Tensor) and "val" not in node.meta and "example_value" not in node.meta:
            node.meta["example_value"] = torch.empty_like(value, device="meta")


def opaque_leaves(gm: fx.GraphModule) -> list[fx.Node]:
    """Leaf-module calls and autowrapped Python functions whose inside the passes cannot see."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and _is_python_function(node.target):
            out.append(node)
        if node.op != "call_module" or node.target == "_guards_fn":
            continue
        module = gm.get_submodule(node.target)
        entry = ops.module_op(type(module))
        if entry is None or entry.category is ops.Category.OPAQUE:
            out.append(node)
    return out


def _is_python_function(target: Any) -> bool:
    """A plain Python function kept whole by the tracer (timm's autowrapped ``scale_image``...):
    not a torch op, not an operator, not a rule libragrad-fx inserted."""
    module = getattr(target, "__module__", None) or ""
    return (inspect.isfunction(target) and target not in GRAPH_FUNCTIONS
            and module.split(".")[0] not in ("torch", "_operator", "operator", "builtins", "math", "libragrad_fx"))


def _hidden_names(gm: fx.GraphModule, nodes: list[fx.Node]) -> str:
    return ", ".join(sorted({type(gm.get_submodule(n.target)).__name__ if n.op == "call_module"
                             else n.target.__name__ for n in nodes}))


def _as_tuple(example_inputs: Any) -> tuple:
    if example_inputs is None:
        return ()
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def export_program(model: nn.Module, example_inputs: tuple, example_kwargs: dict | None = None,
                   notes: list[str] | None = None) -> torch.export.ExportedProgram:
    """Non-strict ``torch.export`` with a dynamic batch dimension (then automatic dims, then static).

    The program is left in torch.export's default (training) IR: never call ``run_decompositions()``
    on it, which turns ``detach`` into ``alias`` and so silently drops the rules written with detach.
    """
    from torch.export import Dim

    notes = [] if notes is None else notes

    tensors = [t for t in example_inputs if isinstance(t, torch.Tensor)]
    if tensors and tensors[0].dim() > 0 and tensors[0].shape[0] == 1:
        # a batch of one would be specialised; export on two copies so the batch dim stays symbolic
        example_inputs = tuple(torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.dim() > 0 else t
                               for t in example_inputs)
    batch = Dim("batch")
    dynamic = tuple({0: batch} if isinstance(t, torch.Tensor) and t.dim() > 0 else None for t in example_inputs)
    attempts = [("dynamic batch", dynamic), ("automatic dynamic dims", tuple(
        {0: Dim.AUTO} if isinstance(t, torch.Tensor) and t.dim() > 0 else None for t in example_inputs)),
                ("static shapes", None)]
    errors = []
    for label, shapes in attempts:
        try:
            with quiet_export(), kept_whole("export"):
                program = torch.export.export(model, example_inputs, example_kwargs or None,
                                              dynamic_shapes=shapes, strict=False)
        except Exception as error:
            errors.append(error)
            if not _is_shape_constraint(error):
                break  # a failure that other shape settings cannot fix
            continue
        if label != "dynamic batch":
            notes.append(f"torch.export: {label} (a dynamic batch dimension was refused)")
        return program
    raise errors[0]


METHODS = ("auto", "fx", "export")


def _is_shape_constraint(error: BaseException) -> bool:
    text = str(error)
    return "Constraints violated" in text or "specializ" in text or type(error).__name__ == "ConstraintViolationError"


def capture(model: nn.Module, example_inputs: Any = None, *, example_kwargs: dict | None = None,
            concrete_args: dict[str, Any] | None = None, method: str = "auto", unroll: bool = True) -> Capture:
    """Capture ``model`` as a GraphModule that shares its parameters and buffers.

    ``method``: ``auto`` (fx, then timm's leaf-aware fx, then torch.export), ``fx`` or ``export``.
    ``unroll``: give fused recurrent kernels an unrolled gradient path for the rules (off when no
    rule will run: the model's own kernel gradient is then the gradient, exactly).
    """
    if method not in METHODS:
        raise ValueError(f"unknown capture method {method!r}; valid: {', '.join(METHODS)}")
    inputs = _as_tuple(example_inputs)
    if method == "export" and not inputs:
        raise CaptureError("capture='export' needs example_inputs (torch.export runs the model on them)")
    concrete = _concrete_defaults(model) if concrete_args is None else concrete_args
    notes: list[str] = []
    failures: list[str] = []
    attempts = [] if method == "export" else [("fx", False)] + (
        [("fx+timm-leaves", True)] if _is_timm(model) else [])
    traced: tuple[str, fx.GraphModule] | None = None
    for label, leaves in attempts:
        try:
            with preserved_state(model):
                gm = _trace_fx(model, concrete, leaves)
        except Exception as error:
            failures.append(f"torch.fx ({label}): {_first_error_line(error)}")
            continue
        traced = (label, gm)
        break
    if traced is not None:
        label, gm = traced
        hidden = opaque_leaves(gm)
        if not hidden or not inputs or method == "fx":
            if hidden:
                notes.append("leaf modules hide ops: " + _hidden_names(gm, hidden)
                             + "; pass example_inputs to capture them with torch.export")
            if failures:
                notes.append("; ".join(failures))
            names = [n.name for n in gm.graph.nodes if n.op == "placeholder" and n.target not in concrete]
            _record_input_types(gm, inputs)
            return Capture(gm, label, names, notes)
        notes.append(f"{label} hides ops in {_hidden_names(gm, hidden)}: captured with torch.export instead")
    if method == "fx":
        raise CaptureError(f"cannot trace {type(model).__name__} with torch.fx: {'; '.join(failures)}")
    if not inputs:
        raise CaptureError(
            f"cannot trace {type(model).__name__} with torch.fx ({'; '.join(failures)}); "
            "pass example_inputs so that torch.export can capture it")
    try:
        with preserved_state(model):
            gm = export_program(model, inputs, dict(example_kwargs or {}), notes).module()
    except Exception as error:
        failures.append(f"torch.export: {_first_error_line(error)}")
        raise CaptureError(f"cannot capture {type(model).__name__}: " + "; ".join(failures)) from error
    notes += inline_autocast_regions(gm) + (unroll_recurrent(gm) if unroll else [])
    if failures:
        notes.append("; ".join(failures))
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    return Capture(gm, "export", names, notes)
