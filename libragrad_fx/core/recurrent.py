"""Make fused recurrent kernels visible to the passes: unroll them into gates (docs/METHOD.md section 2).

``aten.lstm`` (likewise ``aten.gru``, ``aten.rnn_tanh``, ``aten.rnn_relu``) is one opaque kernel.
Written out per time step an LSTM is

    i, f, g, o = sigmoid(.), sigmoid(.), tanh(.), sigmoid(.)   of  x_t W_ih^T + b_ih + h W_hh^T + b_hh
    c = f * c + i * g,    h = o * tanh(c)

which the general rules already cover: the sigmoid gates are detached where they multiply a
stream, tanh is an activation (identity rule), and the biases are biases. A GRU step,
``h = n + z * (h - n)`` (PyTorch's ``(1 - z) * n + z * h``) with ``n = tanh(x W_in + r * (h W_hn + b_hn))``, is gates and an
activation the same way; an Elman RNN is a linear map and a tanh (or ReLU). The forward must stay
bit-identical, and an unrolled LSTM rounds differently from the fused kernel, so the model's
kernel keeps computing the value and the unrolled graph only carries the gradient:

    out = straight_through(lstm(x), unrolled(x)) = lstm(x).detach() + (unrolled(x) - unrolled(x).detach())

(exactly the kernel's value; the gradient of the unrolled graph, which the passes rewrite).
The unrolled graph costs a second forward of each recurrent layer; it needs a static sequence length, which
an exported graph records (``node.meta["val"]``). Train-mode dropout between layers is not unrolled.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from .rules import straight_through

__all__ = ["unroll_recurrent"]

_aten = torch.ops.aten


# aten spelling -> (cell, number of state tensors); all share the argument layout
# (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
_KINDS = {
    _aten.lstm.input: ("LSTM", 2),
    _aten.gru.input: ("GRU", 1),
    _aten.rnn_tanh.input: ("RNN", 1),
    _aten.rnn_relu.input: ("RNN_RELU", 1),
}


def _step(cell: str, x_t: torch.Tensor, state: tuple, w_ih: torch.Tensor, w_hh: torch.Tensor,
          b_ih: Any, b_hh: Any) -> tuple:
    """One time step of ``cell`` written out in its gates (PyTorch's gate order and formulas)."""
    if cell == "LSTM":
        h, c = state
        gates = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = (gates.chunk(4, 1)[k] for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    (h,) = state
    if cell == "GRU":
        gi, gh = F.linear(x_t, w_ih, b_ih), F.linear(h, w_hh, b_hh)
        i_r, i_z, i_n = (gi.chunk(3, 1)[k] for k in range(3))
        h_r, h_z, h_n = (gh.chunk(3, 1)[k] for k in range(3))
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        # (1 - z) * n + z * h spelled with z once: with a constant initial state z * h0 would make z a
        # stream instead of a gate, and (1 - z) an offset the rules cannot balance
        return (n + z * (h - n),)
    pre = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return (torch.relu(pre) if cell == "RNN_RELU" else torch.tanh(pre),)


def _cell_steps(x: torch.Tensor, state: tuple, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: Any, b_hh: Any,
                cell: str, length: int, reverse: bool, batch_first: bool) -> tuple:
    """One layer, one direction, unrolled over ``length`` steps: (outputs over time, *final state)."""
    outputs = []
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        state = _step(cell, x[:, t] if batch_first else x[t], state, w_ih, w_hh, b_ih, b_hh)
        outputs.append(state[0])
    if reverse:
        outputs = outputs[::-1]
    return (torch.stack(outputs, 1 if batch_first else 0), *state)


def _static_length(node: fx.Node, batch_first: bool) -> int | None:
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() != 3:
        return None
    length = value.shape[1 if batch_first else 0]
    return length if isinstance(length, int) else None


def _inline(graph: fx.Graph, args: dict[str, Any], settings: dict[str, Any]) -> tuple:
    """Trace :func:`_cell_steps` with fixed ``settings`` and copy its graph in, inputs mapped to ``args``."""
    states = len(args["state"])

    def steps(x, s0, s1, w_ih, w_hh, b_ih, b_hh):
        return _cell_steps(x, (s0, s1)[:states], w_ih, w_hh, b_ih, b_hh, **settings)

    # one signature for both state sizes: a GRU/RNN's s1 is its only state again, and unused
    given = {"x": args["x"], "s0": args["state"][0], "s1": args["state"][-1], "w_ih": args["w_ih"],
             "w_hh": args["w_hh"], "b_ih": args.get("b_ih"), "b_hh": args.get("b_hh")}  # a missing bias is None
    traced = fx.symbolic_trace(steps)
    env: dict[fx.Node, Any] = {}
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            env[node] = given[node.target]
        elif node.op == "output":
            return fx.node.map_arg(node.args[0], lambda n: env[n])
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    raise AssertionError("a traced function always has an output")


def unroll_recurrent(gm: fx.GraphModule) -> list[str]:
    """Give every eval-mode ``aten.lstm/gru/rnn_tanh/rnn_relu.input`` of ``gm`` an unrolled gradient path;
    returns notes."""
    notes = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _KINDS:
            continue
        cell, n_states = _KINDS[node.target]
        x, hx, params, has_biases, layers, dropout, train, bidirectional, batch_first = node.args
        length = _static_length(x, batch_first) if isinstance(x, fx.Node) else None
        if length is None or (train and dropout > 0 and layers > 1):
            notes.append(f"{node.name}: {cell} left fused (no static sequence length or train-mode dropout)")
            continue
        hx = list(hx) if n_states == 2 else [hx]
        directions = 2 if bidirectional else 1
        per = 4 if has_biases else 2
        graph = gm.graph
        with graph.inserting_after(node):
            anchor = graph.call_function(_aten.detach.default, (node,))  # keeps the insertion order
        with graph.inserting_before(anchor):
            layer_in, finals = x, [[] for _ in range(n_states)]
            for layer in range(layers):
                outs = []
                for d in range(directions):
                    k = layer * directions + d
                    w = params[per * k: per * (k + 1)]
                    state = [graph.call_function(_aten.select.int, (h, 0, k)) for h in hx]
                    out, *last = _inline(graph, {
                        "x": layer_in, "state": state, "w_ih": w[0], "w_hh": w[1],
                        **({"b_ih": w[2], "b_hh": w[3]} if has_biases else {})},
                        {"cell": cell, "length": length, "reverse": d == 1, "batch_first": batch_first})
                    outs.append(out)
                    for kept, value in zip(finals, last):
                        kept.append(value)
                layer_in = outs[0] if directions == 1 else graph.call_function(_aten.cat.default, (outs, -1))
            unrolled = (layer_in, *(graph.call_function(_aten.stack.default, (f, 0)) for f in finals))
        for user in list(node.users):
            if user is anchor or user.op != "call_function" or user.target.__name__ != "getitem":
                continue
            surrogate = unrolled[user.args[1]]
            with graph.inserting_before(user.next):
                combined = graph.call_function(straight_through, (user, surrogate))
            user.replace_all_uses_with(combined, delete_user_cb=lambda u: u is not combined)
        graph.erase_node(anchor)
        notes.append(f"{node.name}: {cell} unrolled over {length} steps for the backward "
                     "(the fused kernel still computes the forward)")
    if notes:
        gm.graph.lint()
        gm.recompile()
    return notes
