"""SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies of the input.

    SG(x) = E_{e ~ N(0, s^2)} [ grad~ f(x + e) ]     (``smoothgrad``; ``smoothgrad_sq`` averages the
                                                      squares, ``vargrad`` takes the variance)

The noise level defaults to the paper's 15% of each sample's value range.
"""
from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor

from ._base import Attribution, Inputs, Target, as_tuple, extra_args, input_gradients, like, repeat_batch
from .readout import repeat, resolve

__all__ = ["SmoothGrad", "NT_TYPES", "BASES"]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
BASES = ("gradient", "input_x_gradient")


class SmoothGrad(Attribution):
    """The average of a gradient method over noisy inputs (captum's NoiseTunnel on Saliency / IxG)."""

    def attribute(self, inputs: Inputs, target: Target = None, additional_forward_args: Any = None,
                  nt_samples: int = 16, stdevs: Union[None, float, tuple] = None, nt_type: str = "smoothgrad",
                  base: str = "gradient", nt_samples_batch_size: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor | tuple[Tensor, ...]:
        """
        Args:
            inputs: a tensor [B, ...] or a tuple of tensors, each attributed.
            target: the class per sample (None: the class predicted at the noise-free ``inputs``),
                ``"prob"`` / :class:`~libragrad_fx.attr.Probability`, or a callable ``output -> Tensor [B]``
                (called once per noisy copy, on the B samples' outputs).
            additional_forward_args: further positional model inputs, not attributed.
            nt_samples: noisy copies per sample.
            stdevs: the noise's standard deviation (a number, or one per input); None: 0.15 times
                each sample's range (max - min).
            nt_type: ``smoothgrad`` (mean), ``smoothgrad_sq`` (mean of squares) or ``vargrad`` (variance).
            base: the method averaged: ``gradient`` or ``input_x_gradient`` (noisy input times gradient).
            nt_samples_batch_size: noisy copies per forward pass; None: all at once.
            generator: for reproducible noise.

        Returns:
            Tensors shaped like ``inputs``.
        """
        if nt_type not in NT_TYPES:
            raise ValueError(f"unknown nt_type {nt_type!r}; valid: {', '.join(NT_TYPES)}")
        if base not in BASES:
            raise ValueError(f"unknown base {base!r}; valid: {', '.join(BASES)}")
        xs = tuple(x.detach() for x in as_tuple(inputs))
        extra = extra_args(additional_forward_args)
        batch = xs[0].shape[0]
        # the class predicted without noise is explained on every noisy copy
        target = resolve(target, lambda: self.output(xs, extra), batch, xs[0].device)
        sigmas = _sigmas(stdevs, xs)
        per_chunk = nt_samples if nt_samples_batch_size is None else max(1, nt_samples_batch_size)
        first = [torch.zeros_like(x) for x in xs]
        second = [torch.zeros_like(x) for x in xs]
        for start in range(0, nt_samples, per_chunk):
            copies = min(per_chunk, nt_samples - start)
            # the noise is drawn where the generator lives (a CPU generator serves CUDA inputs too)
            noisy = tuple(torch.cat([x] * copies) + torch.randn(
                (copies * batch, *x.shape[1:]), generator=generator, dtype=x.dtype,
                device=generator.device if generator is not None else x.device).to(x.device)
                * torch.cat([s] * copies) for x, s in zip(xs, sigmas))
            grads, _, _ = input_gradients(self, noisy, repeat(target, copies), repeat_batch(extra, copies), batch)
            for i, (g, z) in enumerate(zip(grads, noisy)):
                a = (g * z if base == "input_x_gradient" else g).reshape(copies, *xs[i].shape)
                first[i] = first[i] + a.sum(0)
                second[i] = second[i] + (a * a).sum(0)
        mean = [f / nt_samples for f in first]
        squares = [s / nt_samples for s in second]
        if nt_type == "smoothgrad":
            out = mean
        elif nt_type == "smoothgrad_sq":
            out = squares
        else:
            out = [sq - m * m for sq, m in zip(squares, mean)]
        return like(inputs, tuple(out))


def _sigmas(stdevs: Union[None, float, tuple], xs: tuple[Tensor, ...]) -> list[Tensor]:
    """Per-sample noise scales, shaped to broadcast against each input [B, 1, ...]."""
    out = []
    values = stdevs if isinstance(stdevs, tuple) else (stdevs,) * len(xs)
    for s, x in zip(values, xs):
        shape = (x.shape[0], *[1] * (x.dim() - 1))
        if s is None:
            flat = x.flatten(1)
            out.append((0.15 * (flat.max(1).values - flat.min(1).values)).reshape(shape))
        else:
            out.append(torch.full(shape, float(s), dtype=x.dtype, device=x.device))
    return out
