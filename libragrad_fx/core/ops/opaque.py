"""Ops that hide their inside (reported: no rule reaches it), and the ops libragrad-fx inserts.

What libragrad-fx inserts is already LibraGrad: re-analysing a transformed graph reads each rule
as one op (its roles say which argument carries the gradient and which constant it adds)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .schema import Category, Op, Role

O, R = Category.OPAQUE, Category.REWRITTEN


class _Doubled(torch.autograd.Function):
    """2x with its own backward: the example of a custom Function."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


SEL, ADD = Role.SELECTOR, Role.ADDITIVE

ENTRIES: list[Op] = [
    Op("multi_head_attention", O, spellings=("multi_head_attention_forward",), modules={nn.MultiheadAttention: ()},
       reason="nn.MultiheadAttention kept whole hides its ops: pass example inputs so that torch.export captures them",
       example=lambda t: (nn.MultiheadAttention(4, 2).double(), (t(3, 2, 4), t(3, 2, 4), t(3, 2, 4)), {})),
    Op("rnn", O, spellings=("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell",
                            "rnn_relu_cell"),
       modules={nn.LSTM: (), nn.GRU: (), nn.RNN: (), nn.LSTMCell: (), nn.GRUCell: (), nn.RNNCell: ()},
       reason="a fused recurrent kernel hides its gates: pass example inputs so that torch.export captures it "
              "(it is then unrolled for the backward)",
       example=lambda t: (nn.LSTM(4, 3).double(), (t(5, 2, 4),), {})),
    Op("autograd_function", O, spellings=("libragrad.autograd_function",),
       reason="a custom torch.autograd.Function: kept as one call with its own backward, which no rule reaches",
       example=lambda t: (_Doubled.apply, (t(3, 4),), {})),
    # --- what libragrad-fx inserts ------------------------------------------------------------------
    # (the value a rule keeps is a selector: the gradient goes to the argument the rule differentiates)
    Op("libragrad.scale_grad", R),
    Op("libragrad.factor_grad", R),
    Op("libragrad.identity_rule", R, roles={"y": SEL, "f0": ADD}),
    Op("libragrad.straight_through", R, roles={"y": SEL}),
    Op("libragrad.batch_norm_train", R, roles={"y": SEL}),
    Op("libragrad.instance_norm", R, roles={"y": SEL}),
    Op("libragrad.lerp", R, roles={"y": SEL}),
    Op("libragrad.layer_norm", R, roles={"bias": ADD}),
    Op("libragrad.group_norm", R, roles={"bias": ADD}),
]
