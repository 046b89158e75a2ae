"""Which input gradients a running backward will read, for the custom ops' Python backwards.

``ctx.needs_input_grad`` is fixed when the forward runs. With parameters that require grad it says
yes to a weight even when the backward was asked for input gradients only
(``torch.autograd.grad(f, x)``); autograd's own kernels skip such a weight gradient, a Python
backward would compute it and throw it away. :func:`wanted` asks the engine what the running
backward will execute instead, and falls back to ``needs_input_grad`` wherever the engine cannot
say (a backward called by hand, a tracer).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["record_inputs", "wanted"]


def record_inputs(ctx: Any, inputs: Sequence[Any]) -> None:
    """Remember which of the op's arguments are tensors (setup_context): the engine has one edge per tensor.
    Recorded only where two or more inputs need a gradient: with one, a running backward reaches the node
    only through it, and :func:`wanted` has nothing to ask the engine."""
    if sum(ctx.needs_input_grad) >= 2:
        ctx.tensor_slots = tuple([i for i, value in enumerate(inputs) if isinstance(value, Tensor)])


def wanted(ctx: Any) -> tuple[bool, ...]:
    """``ctx.needs_input_grad``, with False wherever the running backward will not use that gradient."""
    needs = tuple(ctx.needs_input_grad)
    slots = getattr(ctx, "tensor_slots", None)
    if slots is None or torch._C._current_graph_task_id() == -1:
        return needs
    try:
        edges = ctx.next_functions
    except (AttributeError, RuntimeError):
        return needs
    if len(edges) != len(slots):
        return needs
    out = list(needs)
    for slot, (node, _) in zip(slots, edges):
        if out[slot]:
            out[slot] = node is not None and _executes(node)
    return tuple(out)


def _executes(node: Any) -> bool:
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:  # a leaf whose gradient autograd.grad() returns: it is wanted
        return True
