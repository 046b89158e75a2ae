"""Make a fused LSTM kernel visible to the passes: unroll it into gates (LIBRAGRAD.md section 2).

``aten.lstm`` is one opaque kernel. Written out per time step it is

    i, f, g, o = sigmoid(.), sigmoid(.), tanh(.), sigmoid(.)   of  x_t W_ih^T + b_ih + h W_hh^T + b_hh
    c = f * c + i * g,    h = o * tanh(c)

which the general rules already cover: the sigmoid gates are detached where they multiply a
stream, tanh is an activation (identity rule), and the biases are biases. The forward must stay
bit-identical, and an unrolled LSTM rounds differently from the fused kernel, so the model's
kernel keeps computing the value and the unrolled graph only carries the gradient:

    out = straight_through(lstm(x), unrolled(x)) = lstm(x).detach() + (unrolled(x) - unrolled(x).detach())

(exactly the kernel's value; the gradient of the unrolled graph, which the passes rewrite).
The unrolled graph costs a second forward of each LSTM; it needs a static sequence length, which
an exported graph records (``node.meta["val"]``). Train-mode dropout between layers is not unrolled.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from .rules import straight_through

__all__ = ["unroll_lstms"]

_aten = torch.ops.aten


def _cell_steps(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: Any, b_hh: Any, length: int, reverse: bool, batch_first: bool) -> tuple:
    """One layer, one direction, unrolled over ``length`` steps: (outputs over time, h_T, c_T)."""
    outputs = []
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        x_t = x[:, t] if batch_first else x[t]
        gates = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = (gates.chunk(4, 1)[k] for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    if reverse:
        outputs = outputs[::-1]
    return torch.stack(outputs, 1 if batch_first else 0), h, c


def _static_length(node: fx.Node, batch_first: bool) -> int | None:
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() != 3:
        return None
    length = value.shape[1 if batch_first else 0]
    return length if isinstance(length, int) else None


def _inline(graph: fx.Graph, args: dict[str, Any], settings: dict[str, Any]) -> tuple:
    """Trace :func:`_cell_steps` with fixed ``settings`` and copy its graph in, inputs mapped to ``args``."""
    def steps(x, h, c, w_ih, w_hh, b_ih, b_hh):
        return _cell_steps(x, h, c, w_ih, w_hh, b_ih, b_hh, **settings)

    traced = fx.symbolic_trace(steps)
    env: dict[fx.Node, Any] = {}
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            env[node] = args.get(node.target)  # a missing bias is None
        elif node.op == "output":
            return fx.node.map_arg(node.args[0], lambda n: env[n])
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    raise AssertionError("a traced function always has an output")


def unroll_lstms(gm: fx.GraphModule) -> list[str]:
    """Give every eval-mode ``aten.lstm.input`` of ``gm`` an unrolled gradient path; returns notes."""
    notes = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not _aten.lstm.input:
            continue
        x, hx, params, has_biases, layers, dropout, train, bidirectional, batch_first = node.args
        length = _static_length(x, batch_first) if isinstance(x, fx.Node) else None
        if length is None or (train and dropout > 0 and layers > 1):
            notes.append(f"{node.name}: LSTM left fused (no static sequence length or train-mode dropout)")
            continue
        directions = 2 if bidirectional else 1
        per = 4 if has_biases else 2
        graph = gm.graph
        with graph.inserting_after(node):
            anchor = graph.call_function(_aten.detach.default, (node,))  # keeps the insertion order
        with graph.inserting_before(anchor):
            layer_in, h_last, c_last = x, [], []
            for layer in range(layers):
                outs = []
                for d in range(directions):
                    k = layer * directions + d
                    w = params[per * k: per * (k + 1)]
                    h0 = graph.call_function(_aten.select.int, (hx[0], 0, k))
                    c0 = graph.call_function(_aten.select.int, (hx[1], 0, k))
                    out, h_t, c_t = _inline(graph, {
                        "x": layer_in, "h": h0, "c": c0, "w_ih": w[0], "w_hh": w[1],
                        **({"b_ih": w[2], "b_hh": w[3]} if has_biases else {})},
                        {"length": length, "reverse": d == 1, "batch_first": batch_first})
                    outs.append(out)
                    h_last.append(h_t)
                    c_last.append(c_t)
                layer_in = outs[0] if directions == 1 else graph.call_function(_aten.cat.default, (outs, -1))
            unrolled = (layer_in, graph.call_function(_aten.stack.default, (h_last, 0)),
                        graph.call_function(_aten.stack.default, (c_last, 0)))
        for user in list(node.users):
            if user is anchor or user.op != "call_function" or user.target.__name__ != "getitem":
                continue
            surrogate = unrolled[user.args[1]]
            with graph.inserting_before(user.next):
                combined = graph.call_function(straight_through, (user, surrogate))
            user.replace_all_uses_with(combined, delete_user_cb=lambda u: u is not combined)
        graph.erase_node(anchor)
        notes.append(f"{node.name}: LSTM unrolled over {length} steps for the backward "
                     "(the fused kernel still computes the forward)")
    if notes:
        gm.graph.lint()
        gm.recompile()
    return notes
