"""Input gradients only: parameters that do not require grad for the length of a block.

An attribution asks for gradients with respect to inputs (and to values inside the graph, such as
FullGrad's bias sites), never to parameters. With parameters requiring grad, autograd still
prepares for their gradients at forward time: every linear map keeps its input alive for a
weight gradient nobody reads, ops whose backward is a Python rule see ``needs_input_grad`` true
for the weight, and ``torch.compile`` traces a backward graph that computes all weight gradients.
:func:`frozen_parameters` turns ``requires_grad`` off on the parameters of the given modules and
restores each flag on exit, so the user's model is left as it was.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn

__all__ = ["frozen_parameters"]


@contextlib.contextmanager
def frozen_parameters(*modules: nn.Module) -> Iterator[None]:
    """Within the block, no parameter of ``modules`` requires grad; every flag is restored after.

    A transformed model shares its parameters with the user's model, so freezing either freezes
    both for the block. Not thread-safe: another thread training the same model meanwhile would
    see its parameters frozen.
    """
    frozen = {id(p): p for m in modules for p in m.parameters() if p.requires_grad}
    for p in frozen.values():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen.values():
            p.requires_grad_(True)
