"""Every node's shape, from one run of the graph: on meta tensors (no data), else on the example.

What the backward pruning needs to find which output features of a projection are live. A run
that fails says where (node and op) and why, like torch.fx's ShapeProp.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from .errors import first_line
from .spelling import describe

__all__ = ["Shapes", "propagate"]


@dataclass
class Shapes:
    values: dict[fx.Node, Any] | None
    """Every node's value as meta tensors (None: no run succeeded)."""
    failure: str | None = None
    """Where and why the run failed (node, op, error)."""
    how: str = "meta"
    """``meta`` (shapes from meta tensors) or ``example`` (a real run on the example inputs)."""


class _Recorder(fx.Interpreter):
    """Runs a graph and keeps each node's value as a meta tensor, naming the node a failure is at."""

    def __init__(self, gm: fx.GraphModule, meta: bool) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.meta = meta
        self.at: fx.Node | None = None

    def run_node(self, node: fx.Node) -> Any:
        self.at = node
        return super().run_node(node)

    def get_attr(self, target, args, kwargs) -> Any:
        value = super().get_attr(target, args, kwargs)
        return _to_meta(value) if self.meta else value

    def call_module(self, target, args, kwargs) -> Any:
        if not self.meta:
            return super().call_module(target, args, kwargs)
        module = self.fetch_attr(target)
        state = {k: _to_meta(v) for k, v in itertools.chain(module.named_parameters(), module.named_buffers())}
        return torch.func.functional_call(module, state, tuple(args), dict(kwargs))


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        out = torch.empty_like(value, device="meta")
        return nn.Parameter(out, value.requires_grad) if isinstance(value, nn.Parameter) else out
    return value


def placeholder_values(gm: fx.GraphModule, example_inputs: Any, example_kwargs: dict | None) -> list:
    """One value per placeholder of ``gm``: the positional examples in order, then keyword examples by name,
    then the placeholder's default (None where it has none)."""
    args = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
    kwargs = example_kwargs or {}
    out = []
    for node in gm.graph.find_nodes(op="placeholder"):
        out.append(args.pop(0) if args else kwargs[node.target] if node.target in kwargs
                   else node.args[0] if node.args else None)
    return out


def propagate(gm: fx.GraphModule, example_inputs: Any, example_kwargs: dict | None = None, *,
              real: bool = True) -> Shapes:
    """Run ``gm`` on meta tensors shaped like the example (then, if that fails and ``real``, on the
    example itself: not for a model in training mode, whose run would update its statistics)."""
    inputs = placeholder_values(gm, example_inputs, example_kwargs)
    failures = []
    for meta in (True, False) if real else (True,):
        runner = _Recorder(gm, meta)
        try:
            with torch.no_grad():
                runner.run(*(_to_meta(a) if meta else a for a in inputs))
        except Exception as error:
            node = runner.at
            op = describe(node, gm) if node is not None and node.op.startswith("call") else None
            where = f"node {node.name} ({op.spelling if op is not None else node.op})" if node is not None else "start"
            failures.append(f"{'on meta tensors' if meta else 'on the example inputs'} at {where}: "
                            f"{type(error).__name__}: {first_line(error, 160)}")
            continue
        values = {n: v if meta else _tree_meta(v) for n, v in runner.env.items()}
        return Shapes(values, None, "meta" if meta else "example")
    return Shapes(None, "; ".join(failures))


def _tree_meta(value: Any) -> Any:
    return torch.utils._pytree.tree_map(_to_meta, value)
