"""Products, quotients and fused arithmetic, classified by which of their arguments depend on the input.

A product whose factors include k streams is homogeneous of degree k: the gating rule scales each
stream factor's share by 1/k and detaches gate factors and input-dependent denominators. Fused
arithmetic (``addcmul``, ``addmm``, ``baddbmm``, ``lerp``...) is a sum of such products (its
``terms``): ``addcmul(x, a, b) = x + v a b`` is a product only when a and b both depend on the
input, and then only its product term is balanced.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import rules
from .schema import SELF, Category, Op, Role, Rule

PR = Category.PRODUCT
FACTOR, DENOM, ADD = Role.FACTOR, Role.DENOMINATOR, Role.ADDITIVE
_BINARY = ("input", "other", "alpha")


def _div(call) -> Category:
    # floor / trunc division is piecewise constant
    return Category.NONDIFF if call.args.get("rounding_mode") is not None else PR


def _lerp_args(node, call):
    """rules.lerp(y, start, end, weight, 1/deg(w start), 1/deg(w end)) for lerp's two product terms."""
    return (SELF, call.args.get("input"), call.args.get("end"), call.args.get("weight"))


ENTRIES: list[Op] = [
    Op("mul", PR, spellings=("imul", "multiply"), positional=_BINARY,
       example=lambda t: (torch.mul, (t(3, 4), t(3, 4)), {})),
    Op("div", PR, spellings=("truediv", "itruediv", "true_divide", "divide"), roles={"other": DENOM},
       positional=_BINARY, refine=_div,
       example=lambda t: (torch.div, (t(3, 4), t(3, 4, positive=True)), {})),
    Op("matmul", PR, spellings=("bmm", "mm", "mv"), positional=("input", "other"),
       example=lambda t: (torch.matmul, (t(3, 4), t(4, 5)), {})),
    Op("einsum", PR, roles={"equation": Role.SHAPE},
       example=lambda t: (torch.einsum, ("ij,jk->ik", t(3, 4), t(4, 5)), {})),
    Op("outer", PR, spellings=("ger",), example=lambda t: (torch.outer, (t(3), t(4)), {})),
    Op("dot", PR, spellings=("inner",), example=lambda t: (torch.dot, (t(4), t(4)), {})),
    Op("vdot", PR, example=lambda t: (torch.vdot, (t(4), t(4)), {})),
    Op("kron", PR, example=lambda t: (torch.kron, (t(2, 3), t(3, 2)), {})),
    Op("cross", PR, spellings=("linalg_cross",), example=lambda t: (torch.cross, (t(4, 3), t(4, 3)), {"dim": 1})),
    Op("tensordot", PR, example=lambda t: (torch.tensordot, (t(3, 4), t(4, 5)), {"dims": 1})),
    Op("bilinear", PR, modules={nn.Bilinear: ("weight", "bias")}, roles={"bias": ADD},
       example=lambda t: (F.bilinear, (t(3, 4), t(3, 5), t(2, 4, 5), t(2)), {})),
    Op("square", PR, exponent=2.0, example=lambda t: (torch.square, (t(3, 4),), {})),
    Op("pow", PR, roles={"input": FACTOR, "exponent": FACTOR}, exponent="exponent", positional=("input", "exponent"),
       example=lambda t: (torch.pow, (t(3, 4), 3), {})),
    Op("float_power", PR, roles={"input": FACTOR, "exponent": FACTOR}, exponent="exponent",
       example=lambda t: (torch.float_power, (t(3, 4), 2), {})),
    # --- fused arithmetic: additive arguments plus one product ------------------------------------
    Op("addcmul", PR, roles={"input": ADD},
       example=lambda t: (torch.addcmul, (t(3, 4), t(3, 4), t(3, 4)), {"value": 0.5})),
    Op("addcdiv", PR, roles={"input": ADD, "tensor2": DENOM},
       example=lambda t: (torch.addcdiv, (t(3, 4), t(3, 4), t(3, 4, positive=True)), {"value": 0.5})),
    Op("addmm", PR, roles={"input": ADD}, example=lambda t: (torch.addmm, (t(3, 5), t(3, 4), t(4, 5)), {})),
    Op("addbmm", PR, roles={"input": ADD}, example=lambda t: (torch.addbmm, (t(3, 5), t(2, 3, 4), t(2, 4, 5)), {})),
    Op("baddbmm", PR, roles={"input": ADD},
       example=lambda t: (torch.baddbmm, (t(2, 3, 5), t(2, 3, 4), t(2, 4, 5)), {"beta": 0.5})),
    Op("addmv", PR, roles={"input": ADD}, example=lambda t: (torch.addmv, (t(3), t(3, 4), t(4)), {})),
    Op("addr", PR, roles={"input": ADD}, example=lambda t: (torch.addr, (t(3, 4), t(3), t(4)), {})),
    # lerp(a, b, w) = a - w a + w b: the weight multiplies both ends, so each product is balanced
    # on its own (the rule's surrogate spells the sum out)
    Op("lerp", PR, roles={"input": ADD, "end": ADD, "weight": FACTOR},
       terms=(("input",), ("weight", "input"), ("weight", "end")), positional=("input", "end", "weight"),
       rule=Rule("a - scale_grad(w a, 1/k) + scale_grad(w b, 1/k): each product balanced by its degree",
                 rules.lerp, _lerp_args, wrap=True),
       example=lambda t: (torch.lerp, (t(3, 4), t(3, 4), t(3, 4)), {})),
    # a product over a dimension: its degree is that dimension's size
    *[Op(name, Category.OPAQUE, reason="a product over a dimension (degree = its size): no rule",
         example=lambda t, fn=getattr(torch, name): (fn, (t(3, 4), 1), {})) for name in ("prod", "cumprod")],
]
