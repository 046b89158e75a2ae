"""What every attribution method shares: the model it explains, its inputs and its target.

A method takes a transformed GraphModule (``libragrad_fx.transform(model)``) or a plain model,
which it transforms on first use with the ``libragrad`` preset (``preset=`` chooses another,
``vanilla`` included). The target is a logit of a ``[batch, classes]`` output: ``None`` for the
predicted class, an int for one class, or one class per sample.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor

__all__ = ["Attribution", "Inputs", "Target", "is_transformed", "targets", "target_values", "as_tuple", "like",
           "input_gradients", "extra_args", "class_index",
           "repeat_batch"]

Inputs = Union[Tensor, Sequence[Tensor]]
Target = Union[None, int, Sequence[int], Tensor]


def is_transformed(model: nn.Module) -> bool:
    """A GraphModule made by :func:`libragrad_fx.transform` (it carries its report)."""
    return isinstance(model, fx.GraphModule) and hasattr(model, "libragrad_report")


class Attribution:
    """Base of the attribution methods: resolves the model to explain, once.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed on first use).
        preset: for a plain model, the rule preset (default ``libragrad``); for a transformed one,
            it must match the preset it was transformed with.
        **transform_kwargs: passed to :func:`libragrad_fx.transform` (``capture``, ``concrete_args``...).
    """

    def __init__(self, model: nn.Module, *, preset: str | None = None, **transform_kwargs: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__} explains an nn.Module, got {type(model).__name__}")
        if is_transformed(model):
            made = model.libragrad_report.preset
            if preset is not None and preset != made:
                raise ValueError(f"the model was transformed with preset {made!r}, not {preset!r}: "
                                 f"pass the plain model to use preset {preset!r}")
            if transform_kwargs:
                raise ValueError("the model is already transformed: transform options "
                                 f"({', '.join(transform_kwargs)}) apply to plain models only")
            self._gm: fx.GraphModule | None = model
            preset = made
        else:
            self._gm = None
        self.model = model
        self.preset = preset or "libragrad"
        self._transform_kwargs = transform_kwargs

    def graph_module(self, inputs: tuple[Tensor, ...], extra: tuple = ()) -> fx.GraphModule:
        """The transformed model (transformed now, with ``inputs`` as the example, if needed)."""
        if self._gm is None:
            from libragrad_fx.core.transform import transform

            example = inputs + tuple(extra)
            self._gm = transform(self.model, example if len(example) > 1 else example[0], preset=self.preset,
                                 **self._transform_kwargs)
        return self._gm

    @property
    def input_names(self) -> list[str] | None:
        return None if self._gm is None else [n.name for n in self._gm.graph.nodes if n.op == "placeholder"]

    def forward(self, inputs: tuple[Tensor, ...], extra: tuple = ()) -> Tensor:
        return self.graph_module(inputs, extra)(*inputs, *extra)


def as_tuple(inputs: Inputs) -> tuple[Tensor, ...]:
    if isinstance(inputs, Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(x, Tensor) for x in inputs):
        return tuple(inputs)
    raise TypeError("inputs must be a tensor or a tuple of tensors, "
                    f"got {type(inputs).__name__}")


def like(inputs: Inputs, values: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """``values`` in the structure of ``inputs``: a tensor for a tensor, a tuple for a tuple."""
    return values[0] if isinstance(inputs, Tensor) else tuple(values)


def _logits(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"the model returns {type(output).__name__}; attribution targets a logit of a "
                        "[batch, classes] tensor output (wrap the model to return one)")
    if output.dim() != 2:
        raise ValueError(f"the model's output has shape {tuple(output.shape)}; attribution targets a logit "
                         "of a [batch, classes] output (wrap the model to select one)")
    return output


def targets(output: Any, target: Target) -> Tensor:
    """The class index per sample [B]: the predicted class for ``None``."""
    logits = _logits(output)
    if target is None:
        return logits.detach().argmax(-1)
    index = class_index(target, logits.shape[0], logits.device)
    if index.min() < 0 or index.max() >= logits.shape[1]:
        raise ValueError(f"target {index.tolist()} out of range for {logits.shape[1]} classes")
    return index


def class_index(target: Target, batch: int, device: torch.device | str = "cpu") -> Tensor:
    """An explicit target (an int, or one per sample) as a class index per sample [B]."""
    if target is None:
        raise ValueError("target is None: the predicted class needs the model's output (use targets())")
    index = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1)
    if index.numel() == 1:
        return index.expand(batch)
    if index.numel() != batch:
        raise ValueError(f"target has {index.numel()} entries for a batch of {batch}: pass one per sample")
    return index


def target_values(output: Any, index: Tensor) -> Tensor:
    """f_t(x) per sample [B]: the target logit of each sample."""
    return _logits(output).gather(1, index[:, None])[:, 0]


def input_gradients(method: Attribution, inputs: tuple[Tensor, ...], target: Target,
                    extra: tuple = ()) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """(grad~_x f_t for each input, f_t(x) [B], target index [B]): one forward, one backward,
    gradients requested for the inputs only."""
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)
    with torch.enable_grad():
        output = method.forward(xs, extra)
        index = targets(output, target)
        values = target_values(output, index)
        grads = torch.autograd.grad(values.sum(), xs, allow_unused=True)
    grads = tuple(torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads))
    return grads, values.detach(), index


def extra_args(additional_forward_args: Any) -> tuple:
    if additional_forward_args is None:
        return ()
    return tuple(additional_forward_args) if isinstance(additional_forward_args, (tuple, list)) else (
        additional_forward_args,)


def repeat_batch(extra: tuple, times: int) -> tuple:
    """Additional tensor inputs repeated along the batch, to follow inputs stacked ``times`` over."""
    return tuple(torch.cat([e] * times) if isinstance(e, Tensor) and e.dim() > 0 else e for e in extra)
