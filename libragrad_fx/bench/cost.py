"""What an explanation costs, counted rather than timed: FLOPs and the bytes saved for the backward.

:func:`measure` runs a call once under a dispatch mode that sees every ATen op the call runs,
forward and backward (the engine's graph task says which), and the custom ops the rewrite
inserted: the count follows the graph that actually runs, pruning included, not a hand model.

* **FLOPs** are those of matrix products: mm, addmm, bmm, baddbmm, convolution and its backward,
  fused attention and its backward, with :mod:`torch.utils.flop_counter`'s formulas, plus the
  kernels it has none for (CPU flash attention, ``libragrad::linear_cols``,
  ``libragrad::attention``). Elementwise ops, norms, softmax and copies are not FLOPs here; the
  elements they write are counted apart (``other_elements``), a measure of memory-bound work.
* **Saved bytes**: the storages autograd keeps for the backward (``saved_tensors_hooks``), each
  storage once, without the parameters and buffers (they exist anyway). A call that runs several
  forward/backward cycles (integrated gradients in batches) reports its largest cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

import libragrad_fx  # noqa: F401  (registers torch.ops.libragrad)

__all__ = ["Cost", "measure"]

aten = torch.ops.aten


def _linear_flops(input, weight, *args, **kwargs) -> int:
    return 2 * input.numel() * weight.shape[0]


def _sdpa_flops(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _sdpa_backward_flops(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


_EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops,
    torch.ops.libragrad.linear_cols: _linear_flops,
    torch.ops.libragrad.attention: _sdpa_flops,
}


@dataclass
class Cost:
    """One call's counts; ``forward`` is everything outside the autograd engine, ``backward`` inside it."""

    forward_flops: int = 0
    backward_flops: int = 0
    forward_other_elements: int = 0
    backward_other_elements: int = 0
    saved_bytes: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    """FLOPs per op and phase (``"backward mm"``), for reading where they go."""

    @property
    def flops(self) -> int:
        return self.forward_flops + self.backward_flops

    @property
    def other_elements(self) -> int:
        return self.forward_other_elements + self.backward_other_elements

    def to_dict(self) -> dict[str, Any]:
        return {"forward_flops": self.forward_flops, "backward_flops": self.backward_flops, "flops": self.flops,
                "forward_other_elements": self.forward_other_elements,
                "backward_other_elements": self.backward_other_elements, "saved_bytes": self.saved_bytes}


class _Counter(TorchDispatchMode):
    def __init__(self, cost: Cost, saved: "_Saved") -> None:
        super().__init__()
        self.cost, self.saved = cost, saved

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        backward = torch._C._current_graph_task_id() != -1
        if backward:
            self.saved.close_cycle()
        packet = func.overloadpacket
        if packet in _EXTRA_FORMULAS:
            flops = _EXTRA_FORMULAS[packet](*args, **kwargs)
        elif packet in flop_registry:
            flops = flop_registry[packet](*args, **kwargs, out_val=out)
        else:
            flops = 0
            if not func.is_view:  # nor what aliases an input (_unsafe_view, in-place ops count: they write)
                inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, list(kwargs.values())))}
                written = sum(t.numel() for t in _tensors(out)
                              if t.untyped_storage().data_ptr() not in inputs or func._schema.is_mutable)
                if backward:
                    self.cost.backward_other_elements += written
                else:
                    self.cost.forward_other_elements += written
        if flops:
            phase = "backward" if backward else "forward"
            setattr(self.cost, f"{phase}_flops", getattr(self.cost, f"{phase}_flops") + flops)
            key = f"{phase} {packet.__name__}"
            self.cost.by_op[key] = self.cost.by_op.get(key, 0) + flops
        return out


class _Saved:
    """Unique storages packed for the backward, per forward/backward cycle."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.current: dict[int, int] = {}
        self.cycles: list[int] = []

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.exclude:
            self.current[key] = storage.nbytes()
        return tensor

    def close_cycle(self) -> None:
        if self.current:
            self.cycles.append(sum(self.current.values()))
            self.current = {}

    @property
    def largest(self) -> int:
        self.close_cycle()
        return max(self.cycles, default=0)


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def measure(call: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> Cost:
    """Run ``call`` once and count its FLOPs and saved bytes; ``exclude``: tensors that exist anyway
    (the model's parameters and buffers), not counted as saved."""
    cost = Cost()
    saved = _Saved({t.untyped_storage().data_ptr() for t in exclude})
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), _Counter(cost, saved):
        call()
    cost.saved_bytes = saved.largest
    return cost
