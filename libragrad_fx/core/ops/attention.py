"""Fused attention: the attention rule makes softmax(q k^T s + mask) a constant (docs/METHOD.md section 2).

Its query, key and mask are score arguments: detached, so gradient reaches the input through the
values only. Manual attention (``softmax(q @ k^T) @ v``) needs no entry: a softmax is a gate of the
attention family (:mod:`.elementwise`) and a product detaches its gate factors.
"""
from __future__ import annotations

import torch.nn.functional as F

from .schema import STATISTIC, VALUE, Category, Op, Role

SCORE = Role.SCORE

ENTRIES: list[Op] = [
    Op("scaled_dot_product_attention", Category.ATTENTION,
       spellings=("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
                  "_scaled_dot_product_flash_attention", "libragrad.attention"),
       roles={"query": SCORE, "key": SCORE, "attn_mask": SCORE, "value": Role.INPUT},
       outputs=(VALUE, STATISTIC),
       example=lambda t: (F.scaled_dot_product_attention, (t(2, 3, 4), t(2, 3, 4), t(2, 3, 4)), {})),
]
