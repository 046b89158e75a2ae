"""The shape of one entry of the op registry: what the tool knows about one op.

An :class:`Op` says, for one canonical op, how graphs spell it, what kind of function it is
(:class:`Category`), what each of its arguments does (:class:`Role`) and which rule makes it
complete. The analysis and the passes read entries only; they never branch on spellings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Mapping

__all__ = ["Category", "Role", "Activation", "Rule", "Op", "Composite", "VALUE", "INDICES", "STATISTIC", "MEAN",
           "SELF", "ParamRef", "param"]


class Category(Enum):
    """What an op is, as far as FullGrad-completeness is concerned (docs/METHOD.md sections 1-2)."""

    STRUCTURAL = "structural"
    """Moves, selects or copies elements: complete as is."""
    LINEAR = "linear"
    """Linear in its value arguments (plus a constant): complete as is, the constant is a bias."""
    PIECEWISE = "piecewise"
    """Piecewise linear (ReLU, max): complete as is."""
    ACTIVATION = "activation"
    """Elementwise f(x) = x * g(x) + f(0): made complete by detaching g (nonlinearity family)."""
    GATE = "gate"
    """Bounded or statistical: a constant for whoever multiplies by it."""
    NONDIFF = "nondiff"
    """Piecewise constant (comparisons, rounding, indices): zero gradient, a gate where it multiplies."""
    PRODUCT = "product"
    """Products and quotients of its factor arguments (gating family when two factors depend on the input)."""
    NORM = "norm"
    """Fused normalisations: rewritten as a whole (normalization family)."""
    ATTENTION = "attention"
    """Fused attention: its score arguments are detached (attention family)."""
    SHAPE = "shape"
    """Shapes, sizes, assertions: no value."""
    FACTORY = "factory"
    """New tensors from shapes and literals: constants."""
    SOURCE = "source"
    """Where an input enters (an embedding lookup of input ids)."""
    DETACH = "detach"
    """A value the backward treats as a constant (the user's ``.detach()``, the rules' cuts)."""
    REWRITTEN = "rewritten"
    """What libragrad-fx inserted: already LibraGrad."""
    OPAQUE = "opaque"
    """Unknown, or known to hide ops (leaf modules, custom autograd Functions): reported."""


class Role(Enum):
    """What one argument of an op does."""

    INPUT = "input"
    """Carries value, linearly as far as the op's category goes."""
    ADDITIVE = "additive"
    """Carries value and enters additively: a constant here is a bias (FullGrad)."""
    FACTOR = "factor"
    """Multiplies the op's other factors: with two input-dependent factors the op is a product."""
    DENOMINATOR = "denominator"
    """Divides: detached when it depends on the input (gating family, or the statistic's)."""
    SELECTOR = "selector"
    """Selects (index, mask, condition): carries no value and no gradient."""
    SHAPE = "shape"
    """Read for its shape or dtype only."""
    SCORE = "score"
    """An input of attention logits (query, key, mask): the attention rule makes it a constant."""
    NONLINEAR = "nonlinear"
    """An argument the op is not linear in and no rule covers (sampling coordinates, a learned slope):
    the op is reported when it depends on the input."""
    CHOICE = "choice"
    """One of the values a comparison chooses between (``maximum``, a clamp's tensor bound): a constant
    here is chosen by the input, so no bias site can hold it when another choice depends on the input."""


# What each output of a tuple-valued op is (``Op.outputs``).
VALUE = "value"
"""The op's own value (its category decides)."""
INDICES = "indices"
"""Piecewise-constant indices: zero gradient."""
STATISTIC = "statistic"
"""A normalisation statistic (mean, rstd of a fused norm): a gate of the normalization family."""
MEAN = "mean"
"""A mean: linear in the input."""


@dataclass(frozen=True)
class Activation:
    """f(x) = x * g(x) + f(0): the gate g the nonlinearity rule detaches, and f's value and slope at 0."""

    rule: str
    """The rule, as docs/METHOD.md writes it."""
    f0: float = 0.0
    slope0: float = 1.0


class _Self:
    """Stands for the node a rule applies to, among the rule's arguments."""

    def __repr__(self) -> str:
        return "SELF"


SELF = _Self()


class ParamRef(str):
    """The dotted path of a module's parameter; the rewriter turns it into a ``get_attr`` node."""


def param(node: Any, op: Any, name: str) -> Any:
    """A weight or bias argument: a graph value for functional calls, a parameter path for modules."""
    value = op.args.get(name)
    if op.module is not None:
        return ParamRef(f"{node.target}.{name}") if value is not None else None
    return value


@dataclass(frozen=True)
class Rule:
    """A rule that computes the op with another op of identical forward (a fused kernel's custom op),
    or wraps it in a forward-identity function whose backward is the rule."""

    text: str
    """What the rule does, in the report's words."""
    target: Callable
    """The custom op (``Replace``) or rule function (``Wrap``)."""
    args: Callable[[Any, Any], tuple | None]
    """``(node, op) -> arguments`` of ``target`` (None: this spelling cannot take the rule).
    ``SELF`` stands for the node itself (``Wrap``), ``param(...)`` for a module's parameter."""
    wrap: bool = False
    """``Wrap`` (the node stays, the rule takes over its uses) rather than ``Replace``."""


@dataclass(frozen=True)
class Op:
    """Everything the tool knows about one op."""

    name: str
    """Canonical name: ``gelu``, ``layer_norm``, ``mul``, ``scaled_dot_product_attention``..."""
    category: Category
    spellings: tuple[str, ...] = ()
    """Other names of the op: torch / ``Tensor`` / ``F`` functions and ATen packets (``_softmax``,
    ``native_layer_norm``, ``bmm``...). The in-place form (a trailing ``_``) of every name is understood."""
    modules: Mapping[type, tuple[str, ...]] = field(default_factory=dict)
    """``nn.Module`` types that compute the op, each with the settings to read from the module."""
    functional: Callable | None = None
    """The function a module call lowers to (``F.relu6(x, *settings)``) when it must run out of place."""
    roles: Mapping[str, Role] = field(default_factory=dict)
    """Role of each argument by schema name; an argument not listed is :attr:`Role.INPUT`
    (:attr:`Role.FACTOR` for a :attr:`Category.PRODUCT`)."""
    terms: tuple[tuple[str, ...], ...] | None = None
    """The op as a sum of products of its arguments (``lerp(a, b, w) = a - w a + w b``), for fused
    arithmetic whose products share an argument; default: each additive argument alone, plus the
    product of all factors and denominators."""
    positional: tuple[str, ...] | None = None
    """Argument names of a positional call whose schema torch cannot match (``operator.*``, overloads)."""
    activation: Activation | Callable[[Any], Activation] | None = None
    """For an elementwise op that can act as an activation: its identity-rule data (or, where the
    call's settings decide f(0), a function of the call)."""
    rule: Rule | None = None
    """The rewrite that makes a fused op complete (a norm's, a fused activation's, fused arithmetic's)."""
    pixel: Rule | None = None
    """The pixel readout's rewrite (dissent suppression) of a linear map that reads the model's input
    (:mod:`libragrad_fx.passes.pixel`): same forward, a backward that splits contributions by sign."""
    family: str | None = None
    """For a gate: the family whose rule detaches it (default ``gating``)."""
    elementwise: bool = False
    affine: bool = False
    """Elementwise with constant operands (``1.702 * x``, ``x / 6 + 0.5``): keeps its stream's identity."""
    bounded: bool | Callable[[Any], bool] = False
    """Bounds its output (relu6, hardtanh, clamp with both bounds): a gate where it multiplies, an
    activation where it feeds a stream."""
    exponent: str | float | None = None
    """For a power: the exponent argument, or the fixed exponent. x^p with a constant p > 0 is
    homogeneous of degree p (a product of p streams)."""
    outputs: tuple[str, ...] | None = None
    """For a tuple-valued op: what each output is (:data:`VALUE`, :data:`INDICES`, :data:`STATISTIC`, :data:`MEAN`)."""
    refine: Callable[[Any], Category] | None = None
    """The category of one call, where its settings decide (eval vs train BatchNorm, clamp(min=0))."""
    reason: str | None = None
    """Why an opaque op is reported (shown in the report)."""
    example: Callable[[Callable], tuple[Callable, tuple, dict]] | None = None
    """``example(t) -> (fn, args, kwargs)``: a call of the op on tensors made by ``t(*shape)``, for the
    generated coverage test."""

    def role(self, arg: str) -> Role:
        """The role of argument ``arg`` (``operands[1]`` reads as ``operands``)."""
        base = arg.split("[")[0]
        if base in self.roles:
            return self.roles[base]
        return Role.FACTOR if self.category is Category.PRODUCT else Role.INPUT

    def category_of(self, call: Any) -> Category:
        """The category of one call (``call``: its :class:`~libragrad_fx.core.spelling.OpCall`)."""
        return self.refine(call) if self.refine is not None else self.category

    def activation_of(self, call: Any) -> Activation | None:
        """The identity-rule data of one call (f(0) may depend on its settings)."""
        return self.activation(call) if callable(self.activation) else self.activation

    def bounds(self, call: Any) -> bool:
        """Whether this call bounds its output."""
        return self.bounded(call) if callable(self.bounded) else self.bounded


@dataclass(frozen=True)
class Composite:
    """One function written as several ops: ``exp(-softplus(z))`` is ``sigmoid(-z)``.

    ``pattern`` is a nested tuple ``(op, arg, ...)`` of canonical op names over the bound input
    ``"z"`` and literal numbers; ``canonical(scale * z)`` is what it computes."""

    pattern: tuple
    canonical: str
    scale: float = 1.0

    def __str__(self) -> str:
        return f"{_show(self.pattern)} = {self.canonical}({'' if self.scale == 1 else '-' if self.scale == -1 else f'{self.scale:g} * '}z)"


def _show(pattern: Any) -> str:
    if isinstance(pattern, tuple):
        name, *args = pattern
        if name == "neg":
            return f"-{_show(args[0])}"
        return f"{name}({', '.join(_show(a) for a in args)})"
    return str(pattern)
