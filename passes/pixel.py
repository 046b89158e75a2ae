"""Pixel readout pass: dissent suppression on the layers that read the input (docs/METHOD.md section 8).

Matches: the first linear map or convolution on every path from an input, reached through affine
preprocessing only (reshapes, pads, resizes, constant shifts and scales): a ViT's patch-embedding
convolution, a ConvNeXt's or a Mixer's stem. A path that meets any other op first (a norm, an
activation, an embedding lookup of token ids) has no such layer; the pass says so in a note.
Rule: the registry's ``pixel`` rule of the op (:mod:`libragrad_fx.core.dissent`): the same forward
kernel, a backward that lets the gradient reach the input only through the contributions that
agree with the output's sign. Not a LibraGrad family: ``transform(..., pixel_rule="dissent")``
adds it to any preset, vanilla included.
"""
from __future__ import annotations

import torch.fx as fx

from libragrad_fx.core.analysis import Analysis, Kind
from libragrad_fx.core.ops import Category

from . import Edit, LibraGradPass, Replace

__all__ = ["PIXEL_RULES", "PixelPass", "input_layers"]

PIXEL_RULES = ("dissent",)
"""The pixel readouts ``transform(pixel_rule=...)`` knows."""

_MAPS = ("linear", "conv")
_THROUGH = (Category.STRUCTURAL, Category.LINEAR)
"""What the input may pass through before its first map: ops that keep it affine in the input."""


def input_layers(analysis: Analysis) -> tuple[dict[fx.Node, fx.Node], dict[fx.Node, str]]:
    """({first linear map / convolution on a path from an input: that input}, in graph order;
    {the node that ends a path without one: why}), walking the input's values forward through affine
    ops only. Uses that carry no value of the input (a comparison, a shape read) are no paths."""
    found: dict[fx.Node, fx.Node] = {}
    blocked: dict[fx.Node, str] = {}
    origin: dict[fx.Node, fx.Node] = {i: i for i in analysis.inputs}
    stack = list(analysis.inputs)
    while stack:
        node = stack.pop()
        for user, arg in analysis.uses(node):
            if user in origin or user in blocked or user.op == "output":
                continue
            facts = analysis[user]
            if facts.kind is not Kind.STREAM:
                continue
            name = facts.op.name if facts.op is not None else user.op
            if name in _MAPS:
                if arg == "input" and not any(analysis.dep(facts.op.args.get(k)) for k in ("weight", "bias")):
                    found[user] = origin[node]
                else:  # a weight computed from the input: a product, the gating family's
                    blocked[user] = f"the input reaches {name}'s {'weight' if arg == 'input' else arg}"
                    found.pop(user, None)
                continue
            affine = not facts.issue and name != "conv_transpose" and (
                facts.category in _THROUGH or (facts.category is Category.PRODUCT and facts.degree == 1.0))
            if affine:
                origin[user] = origin[node]
                stack.append(user)
            else:
                blocked[user] = f"{name} comes first"
    order = {n: i for i, n in enumerate(analysis.graph.nodes)}
    return ({n: found[n] for n in sorted(found, key=order.__getitem__)},
            {n: blocked[n] for n in sorted(blocked, key=order.__getitem__)})


class PixelPass(LibraGradPass):
    """One pixel readout (``rule``, one of :data:`PIXEL_RULES`) on the input-facing maps."""

    family = "pixel"

    def __init__(self, rule: str) -> None:
        if rule not in PIXEL_RULES:
            raise ValueError(f"unknown pixel_rule {rule!r}; valid: {', '.join(PIXEL_RULES)} (or None)")
        self.rule = rule
        self.notes: list[str] = []
        """What the last :meth:`plan` could not rewrite, and why."""

    def plan(self, analysis: Analysis) -> list[Edit]:
        found, blocked = input_layers(analysis)
        edits: list[Edit] = []
        self.notes = []
        for node, source in found.items():
            op, entry = analysis[node].op, analysis.entry(node)
            rule = entry.pixel if entry is not None else None
            args = rule.args(node, op) if rule is not None else None
            if args is None:
                self.notes.append(f"pixel rule {self.rule}: {node.name} ({op.spelling}) reads the input but this "
                                  "spelling takes no dissent rule (transposed, padding 'same', or a padding mode "
                                  "other than zeros); its backward is left as it is")
                continue
            edits.append(Replace(node, self.family, f"dissent suppression: {rule.text}",
                                 f"{op.spelling} reads the input {source.name}", rule.target, args))
        if blocked:
            shown = "; ".join(f"{n.name}: {why}" for n, why in list(blocked.items())[:4])
            more = f" and {len(blocked) - 4} more" if len(blocked) > 4 else ""
            head = ("no linear map or convolution reads the input directly" if not found else
                    f"{len(blocked)} path(s) from the input meet another op before a linear map or convolution")
            self.notes.append(f"pixel rule {self.rule}: {head} ({shown}{more}); nothing rewritten there")
        elif not found and not analysis.inputs:
            self.notes.append(f"pixel rule {self.rule}: no input carries a gradient (token ids, masks), so no "
                              "linear map or convolution reads one; nothing rewritten")
        elif not found:
            self.notes.append(f"pixel rule {self.rule}: no input reaches a linear map or convolution; nothing "
                              "rewritten")
        return edits

