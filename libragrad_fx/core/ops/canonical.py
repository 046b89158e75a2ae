"""One function, several spellings: which compositions of ops the analysis reads as one op.

``exp(-softplus(z))`` is ``sigmoid(-z)`` (a selective scan's decay), ``1 / (1 + exp(-z))`` is
``sigmoid(z)``, ``log1p(exp(z))`` is ``softplus(z)``. The analysis reads each match as the
canonical op applied to ``scale * z`` (its inner nodes, used by nothing else, are part of it), so
every spelling of a function gets that function's rule: the same gate, the same identity rule
with the same f(0), the same family. Only rules that keep the value (detach, wrap) apply to a
composite; a fused kernel's custom op would compute it differently.
"""
from __future__ import annotations

from .schema import Composite

Z = "z"

COMPOSITES: tuple[Composite, ...] = (
    Composite(("exp", ("neg", ("softplus", Z))), "sigmoid", -1.0),
    Composite(("exp", ("neg", ("softplus", ("neg", Z)))), "sigmoid", 1.0),
    Composite(("exp", ("log_sigmoid", Z)), "sigmoid", 1.0),
    Composite(("exp", ("log_sigmoid", ("neg", Z))), "sigmoid", -1.0),
    Composite(("reciprocal", ("add", ("exp", ("neg", Z)), 1)), "sigmoid", 1.0),
    Composite(("div", 1, ("add", ("exp", ("neg", Z)), 1)), "sigmoid", 1.0),
    Composite(("reciprocal", ("add", ("exp", Z), 1)), "sigmoid", -1.0),
    Composite(("div", 1, ("add", ("exp", Z), 1)), "sigmoid", -1.0),
    Composite(("log1p", ("exp", Z)), "softplus", 1.0),
    Composite(("log", ("add", ("exp", Z), 1)), "softplus", 1.0),
)
"""Patterns over canonical op names; ``add`` matches its operands in either order, and a number
matches that literal (or a 0-d constant tensor of it)."""
