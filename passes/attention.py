"""Attention pass: prune the score path (docs/METHOD.md section 2).

Matches: fused attention in any spelling (torch or ATen; its score arguments are the registry's
``SCORE`` role), and every product in
which a softmax, or another normalised weight map (weights divided by their own sum), multiplies
a stream: manual ``softmax(q @ k.T * s + bias) @ v``, class attention, talking heads, window and
relative-position attention, attention pooling with latent queries, RoPE'd q/k.
Rule: the attention weights are constants. Fused attention gets its query, key and additive mask
detached (the forward kernel is untouched); a manual one gets its weights detached where they
multiply the values. Gradient then reaches the input and the biases through v only, and no
backward runs through the score path at all.
"""
from __future__ import annotations

from libragrad_fx.core.analysis import Analysis, Cut, Kind
from libragrad_fx.core.ops import Category, Role

from . import Detach, Edit, LibraGradPass, gate_cuts


class AttentionPass(LibraGradPass):
    family = "attention"

    def plan(self, analysis: Analysis) -> list[Edit]:
        edits: list[Edit] = []
        for node, facts in analysis.facts.items():
            if facts.category is not Category.ATTENTION or facts.kind is not Kind.STREAM:
                continue
            for arg, source in analysis.dep_args(node):
                if analysis.role(node, arg) is Role.SCORE:
                    edits.append(Detach(node, self.family, f"{arg} detached: softmax(q k^T s + mask) is a constant",
                                        f"{facts.op.spelling}: the score path", Cut(source, node, arg)))
        for cut, family, why in gate_cuts(analysis):
            if family == self.family:
                edits.append(Detach(cut.consumer, self.family, "attention weights detached",
                                    f"{why}: a softmax-normalised weight map", cut))
        return edits
