"""The op registry: everything libragrad-fx knows about an op, in one entry per op.

Each :class:`Op` holds an op's canonical name, every spelling a graph may use (torch function,
``Tensor`` method, ``F.*``, ``nn.Module`` type with the settings to read, ATen packets and their
in-place forms), its :class:`Category`, the :class:`Role` of each argument, its rule and, for an
elementwise op, f(0) and the slope the identity rule needs. :mod:`~libragrad_fx.core.spelling`
maps a node to its entry; the analysis, the passes, the rewriter and bias discovery read entries
only. Adding an op is adding one entry to one of the files below:

* :mod:`.structural`: moves and copies, shapes, factories, sources, detach;
* :mod:`.linear`: linear and piecewise-linear ops, and piecewise-constant ones;
* :mod:`.products`: products and fused arithmetic (``addcmul``, ``lerp``, ``baddbmm``...);
* :mod:`.elementwise`: activations and gates;
* :mod:`.norms`, :mod:`.attention`: fused kernels the rules rewrite whole;
* :mod:`.opaque`: what hides ops (leaf modules, custom autograd Functions) and what libragrad-fx inserts;
* :mod:`.canonical`: functions that several spellings compute (``exp(-softplus(z))`` is ``sigmoid(-z)``).
"""
from __future__ import annotations

from typing import Iterable

from .schema import (INDICES, MEAN, SELF, STATISTIC, VALUE, Activation, Category, Composite, Op, ParamRef, Role,
                     Rule, param)

__all__ = ["Category", "Role", "Op", "Activation", "Rule", "Composite", "SELF", "ParamRef", "param", "VALUE",
           "INDICES", "STATISTIC", "MEAN", "lookup", "canonical", "category_of", "module_op", "entries",
           "COMPOSITES", "REWRITTEN_NAMESPACE", "additive"]

REWRITTEN_NAMESPACE = "libragrad"
"""What libragrad-fx inserts (``torch.ops.libragrad.*``, ``libragrad_fx.core.rules.*``) is spelled ``libragrad.<name>``."""

_BY_NAME: dict[str, Op] = {}
_BY_SPELLING: dict[str, str] = {}
_BY_MODULE: dict[type, Op] = {}


def _register(found: Iterable[Op]) -> None:
    for op in found:
        if op.name in _BY_NAME:
            raise ValueError(f"op registry: {op.name!r} has two entries")
        _BY_NAME[op.name] = op
        for spelling in (op.name, *op.spellings):
            if _BY_SPELLING.get(spelling, op.name) != op.name:
                raise ValueError(f"op registry: spelling {spelling!r} names both {_BY_SPELLING[spelling]!r} "
                                 f"and {op.name!r}")
            _BY_SPELLING[spelling] = op.name
        for module in op.modules:
            if module in _BY_MODULE:
                raise ValueError(f"op registry: {module.__name__} has two entries")
            _BY_MODULE[module] = op


from . import attention, elementwise, linear, norms, opaque, products, structural  # noqa: E402
from .canonical import COMPOSITES  # noqa: E402

for _module in (structural, linear, products, elementwise, norms, attention, opaque):
    _register(_module.ENTRIES)


def entries() -> list[Op]:
    """Every entry, in registration order."""
    return list(_BY_NAME.values())


def lookup(name: str) -> Op | None:
    """The entry of a canonical name (``None``: unknown, hence opaque)."""
    return _BY_NAME.get(name)


def canonical(raw: str) -> tuple[str, bool]:
    """(canonical name, in place) of a raw spelling: ``relu_`` -> ``(relu, True)``, ``_softmax`` -> ``softmax``.

    A name nobody registered stays as it is (an op the registry does not know is opaque)."""
    if raw in _BY_SPELLING:
        return _BY_SPELLING[raw], False
    if raw.endswith("_") and not raw.endswith("__") and raw[:-1] in _BY_SPELLING:
        return _BY_SPELLING[raw[:-1]], True
    return raw, False


def category_of(name: str) -> Category:
    """The category of a canonical name; unknown names are OPAQUE, libragrad's own ops REWRITTEN."""
    op = _BY_NAME.get(name)
    if op is not None:
        return op.category
    return Category.REWRITTEN if name.startswith(REWRITTEN_NAMESPACE + ".") else Category.OPAQUE


def module_op(module_type: type) -> Op | None:
    """The entry of an ``nn.Module`` type (exact type: a subclass may compute something else)."""
    return _BY_MODULE.get(module_type)


def additive(name: str) -> tuple[str, ...]:
    """The arguments of ``name`` through which a constant enters additively (a bias, for FullGrad)."""
    op = _BY_NAME.get(name)
    return tuple(arg for arg, role in op.roles.items() if role is Role.ADDITIVE) if op is not None else ()
