"""FullGrad computed the direct way, as a reference for the hooked implementation.

Every site's output is returned by the forward, the backward asks for the gradient at each of
them (full size), each contribution grad * b is formed in full and placed on the image site by
site, and every bias is evaluated as its site's op on zero inputs except a linear map's or a
convolution's (read as is). :class:`libragrad_fx.attr.FullGrad` reduces the same quantities inside
the backward instead and reads a norm's bias as its vector; the two must agree to float precision.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from libragrad_fx.attr import biases as biases_module
from libragrad_fx.attr import maps
from libragrad_fx.attr.biases import Biases
from libragrad_fx.attr.readout import target_values, targets
from libragrad_fx.attr.taps import patch_embedding

LINEAR_BIASES = {name: biases_module._CHANNEL_BIAS[name] for name in ("linear", "conv", "conv_transpose")}


def fullgrad_direct(gm: fx.GraphModule, x: torch.Tensor, target) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(the FullGrad map shaped like ``x``, the per-site totals [B] in float64) for an image model."""
    saved = biases_module._CHANNEL_BIAS
    biases_module._CHANNEL_BIAS = LINEAR_BIASES  # every other bias: its op evaluated on zeros
    try:
        biases = Biases(gm, [n.name for n in gm.graph.nodes if n.op == "placeholder"][:1])
        probe = patch_embedding(gm, biases.analysis, biases.live)
        module = biases.module_with([probe] if probe is not None else [])
    finally:
        biases_module._CHANNEL_BIAS = saved
    xs = x.detach().requires_grad_(True)
    batch = x.shape[0]
    with torch.enable_grad():
        output, values, constants, *probe = module(xs)
        index = targets(output, target)
        value = target_values(output, index)
        live = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor) and v.requires_grad]
        grads = torch.autograd.grad(value.sum(), (xs,) + tuple(values[i] for i in live), allow_unused=True)
    site_grads = dict(zip(live, grads[1:]))
    totals, contributions = {}, {}
    for i, name in enumerate(biases.outputs):
        g = site_grads.get(i)
        if g is None:
            totals[name] = torch.zeros(batch, dtype=torch.float64)
            continue
        contribution = torch.where(g != 0, g * constants[i], torch.zeros((), dtype=g.dtype))
        totals[name] = maps.per_sample(contribution, batch, torch.float64)
        contributions[name] = contribution
    grid = tuple(probe[0].shape[-2:]) if probe and probe[0].dim() == 4 else None
    heat = xs.detach() * grads[0]
    placed = None
    for contribution in contributions.values():
        where = maps.layout(contribution.shape, batch, grid, tuple(x.shape[-2:]))
        if where is None:
            continue
        grid_map, _ = maps.to_grid(contribution.detach(), where)
        pixels = maps.spread(grid_map.double(), tuple(x.shape[-2:]))
        placed = pixels if placed is None else placed + pixels
    if placed is not None:
        heat = heat + (placed / x.shape[1])[:, None].to(x.dtype)
    return heat, totals
