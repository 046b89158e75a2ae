"""What every attribution method shares: the model it explains, its inputs and its target.

A method takes a transformed GraphModule (``libragrad_fx.transform(model)``) or a plain model,
which it transforms on first use with the ``libragrad`` preset (``preset=`` chooses another,
``vanilla`` included). What the methods read from the transformed graph is found once and kept
(:mod:`libragrad_fx.attr.compiled`). The target is a class's logit of a ``[batch, classes]`` output
(``None``: the predicted class; an int; one per sample), ``"prob"`` / :class:`Probability`, or a
callable mapping the model's output to one value per sample (:mod:`libragrad_fx.attr.readout`).
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor

from .compiled import Compiled, compiled_of
from .readout import Probability, Target, class_index, read, target_values, targets

__all__ = ["Attribution", "Inputs", "Target", "Probability", "is_transformed", "targets", "target_values",
           "as_tuple", "like", "input_gradients", "extra_args", "class_index", "repeat_batch"]

Inputs = Union[Tensor, Sequence[Tensor]]


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

    def compiled(self, inputs: tuple[Tensor, ...], extra: tuple = ()) -> Compiled:
        """The transformed model and what the methods read from its graph (found once, shared by every
        method on the same transformed model)."""
        return compiled_of(self.graph_module(inputs, extra), len(inputs))

    def forward(self, inputs: tuple[Tensor, ...], extra: tuple = ()) -> Tensor:
        return self.graph_module(inputs, extra)(*inputs, *extra)

    def output(self, inputs: tuple[Tensor, ...], extra: tuple = ()) -> Any:
        """The model's output, without gradients."""
        with torch.no_grad():
            return self.forward(inputs, extra)

    def value(self, inputs: tuple[Tensor, ...], target: Target, extra: tuple = (),
              samples: int | None = None) -> tuple[Tensor, Tensor | None]:
        """(the target's value per sample [B], the class index or None), without gradients."""
        with torch.no_grad():
            return read(self.compiled(inputs, extra), self.forward(inputs, extra), target, samples)

    def traced_readout(self, target: Target, inputs: Inputs, additional_forward_args: Any = None):
        """The traced readout of a ``"prob"`` / :class:`Probability` / callable target (its graph and
        its ``report``); traced now on ``inputs`` if this model has not read it yet. None for a class."""
        from .readout import compiled_readout, readout_of

        readout = readout_of(target)
        if readout is None:
            return None
        xs, extra = as_tuple(inputs), extra_args(additional_forward_args)
        with torch.no_grad():
            output = self.forward(xs, extra)
        index = targets(output, readout.target) if isinstance(readout, Probability) else None
        return compiled_readout(self.compiled(xs, extra), readout, output, index)


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


def input_gradients(method: Attribution, inputs: tuple[Tensor, ...], target: Target, extra: tuple = (),
                    samples: int | None = None) -> tuple[tuple[Tensor, ...], Tensor, Tensor | None]:
    """(grad~_x f_t for each input, f_t(x) [B], class index [B] or None for a callable target): one
    forward, one backward, gradients requested for the inputs only. ``samples``: the batch a callable
    readout is defined on, when ``inputs`` stack copies of it."""
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)
    with torch.enable_grad():
        output = method.forward(xs, extra)
        values, index = read(method.compiled(xs, extra), output, target, samples)
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
