"""Is an attribution complete, and where does completeness break? (docs/METHOD.md: completeness)

:func:`completeness` compares, per sample, what a method attributes with what it should sum to:
f_t(x) for FullGrad and Input x Gradient, f_t(x) - f_t(x') for Integrated Gradients.

:func:`node_completeness` (from :mod:`libragrad_fx.core.verify`) says *where* it breaks: every op
on a gradient path must be locally complete, y = sum_i J~_i x_i + b, under the backward the model
runs (b: its bias, where FullGrad finds one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor

from ._base import Attribution, Inputs, Target, as_tuple, extra_args, input_gradients
from ..core.verify import NodeCheck, NodeCompleteness, check_graph, default_tol

__all__ = ["completeness", "Completeness", "node_completeness", "NodeCheck", "NodeCompleteness", "METHODS"]

METHODS = ("fullgrad", "input_x_gradient", "integrated_gradients")


@dataclass
class Completeness:
    """How far a method's attributions are from summing to what they explain, per sample."""

    method: str
    preset: str
    target: Tensor | None
    """The class attributed [B] (None for a callable readout)."""
    output: Tensor
    """f_t(x) [B]: the target's value."""
    reference: Tensor
    """What the attributions should sum to [B]: f_t(x), or f_t(x) - f_t(x') for Integrated Gradients."""
    attributed: Tensor
    """What they sum to [B]."""

    @property
    def abs_error(self) -> Tensor:
        return (self.attributed - self.reference).abs()

    @property
    def rel_error(self) -> Tensor:
        return self.abs_error / self.reference.abs().clamp_min(torch.finfo(self.reference.dtype).tiny)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "preset": self.preset,
                "target": self.target.tolist() if self.target is not None else None,
                "output": self.output.tolist(), "reference": self.reference.tolist(),
                "attributed": self.attributed.tolist(), "abs_error": self.abs_error.tolist(),
                "rel_error": self.rel_error.tolist()}

    def __str__(self) -> str:
        lines = [f"completeness of {self.method} (preset {self.preset}): worst relative error "
                 f"{float(self.rel_error.max()):.2e}",
                 f"  {'sample':>6} {'target':>6} {'reference':>12} {'attributed':>12} {'abs error':>10} "
                 f"{'rel error':>10}"]
        for i in range(len(self.output)):
            target = int(self.target[i]) if self.target is not None else "-"
            lines.append(f"  {i:>6} {target:>6} {float(self.reference[i]):>12.5g} "
                         f"{float(self.attributed[i]):>12.5g} {float(self.abs_error[i]):>10.2e} "
                         f"{float(self.rel_error[i]):>10.2e}")
        return "\n".join(lines)


def completeness(model: nn.Module, inputs: Inputs, target: Target = None, method: str = "fullgrad", *,
                 preset: str | None = None, additional_forward_args: Any = None, **kwargs: Any) -> Completeness:
    """Per sample: f_t(x), what ``method`` attributes, and the absolute and relative error.

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed with ``preset`` on every
            call: pass the transformed model to check it repeatedly; what is read from its graph is kept).
        inputs: a tensor [B, ...] or a tuple of tensors.
        target: the class per sample (None: the predicted class), ``"prob"`` /
            :class:`~libragrad_fx.attr.Probability`, or a callable ``output -> Tensor [B]``
            (:mod:`libragrad_fx.attr.readout`): FullGrad then sums to the readout's value, the
            readout's own biases included (a probability's head is not locally complete: it does not).
        method: ``fullgrad`` (Input x Gradient plus every bias's share: complete under LibraGrad on
            any model), ``input_x_gradient`` (complete on bias-free models) or
            ``integrated_gradients`` (sums to f(x) - f(x') with the vanilla gradient; ``kwargs``
            go to its ``attribute``: ``baselines``, ``n_steps``, ``method``...).
        preset: the rule preset for a plain model (default ``libragrad``).
    """
    from .. import attr
    from .readout import resolve

    extra = extra_args(additional_forward_args)
    xs = as_tuple(inputs)
    if method == "fullgrad":
        explainer = attr.FullGrad(model, preset=preset)
        result = explainer.decompose(xs, target, additional_forward_args, **kwargs)
        return Completeness(method, explainer.preset, result.target, result.output, result.output.double(),
                            result.attributed)
    if method == "input_x_gradient":
        if kwargs:
            raise TypeError(f"input_x_gradient takes no options, got {', '.join(kwargs)}")
        explainer = attr.InputXGradient(model, preset=preset)
        grads, value, index = input_gradients(explainer, xs, target, extra)
        attributed = _total(tuple(x.detach() * g for x, g in zip(xs, grads)))
        return Completeness(method, explainer.preset, index, value, value.double(), attributed)
    if method == "integrated_gradients":
        explainer = attr.IntegratedGradients(model, preset=preset)
        target = resolve(target, lambda: explainer.output(xs, extra), xs[0].shape[0], xs[0].device)
        maps, delta = explainer.attribute(xs, target=target, additional_forward_args=additional_forward_args,
                                          return_convergence_delta=True, **kwargs)
        attributed = _total(as_tuple(maps))
        value, index = explainer.value(xs, target, extra)
        return Completeness(method, explainer.preset, index, value, attributed - delta.double(), attributed)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def node_completeness(model: nn.Module, inputs: Inputs, *, preset: str | None = None,
                      additional_forward_args: Any = None, tol: float | None = None, probes: int = 3,
                      seed: int = 0, progress: Callable[[int, int], None] | None = None) -> NodeCompleteness:
    """Check y = sum_i J~_i x_i + b at every op on a gradient path and list where it fails
    (:func:`libragrad_fx.core.verify.node_completeness`, on the analysis the attribution methods share:
    a transformed model is not analysed again).

    Args:
        model: a transformed GraphModule, or any ``nn.Module`` (transformed with ``preset``).
        inputs: a tensor [B, ...] or a tuple of tensors (the input-dependent values).
        tol: the relative error above which an op is reported as not complete (default: from the
            inputs' dtype, :func:`~libragrad_fx.core.verify.default_tol`).
        probes: random projections per op (the error estimate's degrees of freedom).
        seed: for the projections.
        progress: called as ``progress(done, total)`` as the ops are checked (a progress display's hook).
    """
    xs = as_tuple(inputs)
    extra = extra_args(additional_forward_args)
    compiled = Attribution(model, preset=preset).compiled(xs, extra)
    report = compiled.gm.libragrad_report
    if tol is None:
        tol = default_tol(next((x.dtype for x in xs if x.is_floating_point()), torch.float32))
    return check_graph(compiled.gm, xs, extra, tol=tol, probes=probes, seed=seed, model=report.model,
                       preset=report.preset, progress=progress, analysis=compiled.analysis)


def _total(maps: tuple[Tensor, ...]) -> Tensor:
    return sum(m.detach().double().flatten(1).sum(1) for m in maps)
