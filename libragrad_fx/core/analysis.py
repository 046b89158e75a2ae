"""Graph analysis: which values depend on the input, and how (docs/METHOD.md section 2).

Every node gets a :class:`Facts` record in ``node.meta["libragrad"]``, read from the op registry
(:mod:`libragrad_fx.core.ops`) and never from spellings:

* ``CONST``: computed from parameters, buffers, literals and shapes only. A constant that
  enters a stream additively is a bias.
* ``STREAM``: degree one in the input under the rewritten backward (outputs of linear ops,
  gated activations, normalised values, attention outputs, products whose factors were balanced).
* ``GATE``: a bounded or statistical function of a stream (sigmoid, softmax, std, rsqrt, ...).
  Whoever multiplies by a gate must treat it as a constant; a gate that reaches a stream any
  other way is *stranded* and resolved once, here: an elementwise one with identity-rule data
  becomes an activation (f(0) is its bias where it is not zero: sigmoid, exp), one at the graph
  output is the head, anything else (a softmax, a statistic) is reported.

Products are read from their arguments' roles, not their names: an op is a product in as many
streams as its factor arguments hold (``addcmul(x, a, b)`` is linear unless both a and b depend on
the input), and a function spelled in several ops is read as that function (``exp(-softplus(z))``
is ``sigmoid(-z)``; :mod:`libragrad_fx.core.ops.canonical`).

:func:`live_nodes` answers which nodes still carry gradient once a set of edges is cut.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Iterable, Iterator

import networkx as nx
import torch
import torch.fx as fx

from . import ops
from .ops import INDICES, MEAN, STATISTIC, Category, Composite, Role
from .spelling import OpCall, describe

__all__ = ["Kind", "Facts", "Analysis", "Cut", "Liveness", "live_nodes", "flatten_nodes", "META"]

META = "libragrad"
_ROUNDS = 8
"""Rounds of resolving stranded gates (each can expose the next: a gate made an activation turns
what follows it back into a stream)."""


class Kind(Enum):
    CONST = "const"
    STREAM = "stream"
    GATE = "gate"


@dataclass(frozen=True)
class Facts:
    kind: Kind
    op: OpCall | None = None
    category: Category | None = None
    family: str | None = None
    """For a gate: the family whose rule detaches it (attention, normalization, nonlinearity, gating)."""
    gate_of: fx.Node | None = None
    """For an elementwise gate: the stream it is a function of, up to constant scale and shift."""
    nondiff: bool = False
    """A piecewise-constant gate (mask, index, comparison): its gradient is zero anyway."""
    role: str | None = None
    """How the analysis resolved the node: ``activation`` (a gate used as one), ``head``, ``stranded``,
    ``wrapped`` (a rule already applies), ``interior`` (an inner node of a composite)."""
    degree: float = 1.0
    """For a product: the number of stream factors its largest term multiplies (its degree)."""
    balance: str | None = None
    """How a product of degree > 1 is balanced: ``output`` (scale its gradient by 1/k), ``factors``
    (scale each stream factor's by 1/k: fused arithmetic with an input-dependent additive part),
    ``rule`` (the registry's rule for its terms)."""
    issue: str | None = None
    """Why no rule can make this node complete (reported)."""
    scale: float = 1.0
    """For a composite: it computes ``op(scale * input)``."""
    interior: tuple = ()
    """For a composite: its inner nodes (whose values only it reads)."""
    composite: Composite | None = None


@dataclass(frozen=True)
class Cut:
    """An edge whose gradient the rewrite stops: ``consumer``'s argument ``arg`` (the node ``source``)."""

    source: fx.Node
    consumer: fx.Node
    arg: str


_SKIP = (Role.SELECTOR, Role.SHAPE)
"""Roles that carry no value: an argument in them never makes an output input-dependent in value."""
_FACTOR_ROLES = (Role.FACTOR, Role.DENOMINATOR)
_AFFINE = frozenset({"mul", "div", "add", "sub", "rsub", "neg", "to", "clone", "dropout", "identity", "positive"})
"""Elementwise ops that, with a constant operand, keep a tensor's base (x, 1.702 * x, x / 6 + 0.5)."""
_HEADS = frozenset({"softmax", "log_softmax"})
"""Output nonlinearities that stay the head when the readout reduces them (a sum of log-probabilities)."""


def _is_shape_value(value: Any) -> bool:
    return value is None or isinstance(value, (bool, numbers.Number, str, torch.dtype, torch.device, torch.Size))


class Analysis:
    """Facts for every node of one graph, plus the graph-level questions the passes ask."""

    def __init__(self, gm: fx.GraphModule, input_names: Iterable[str] | None = None) -> None:
        self.gm = gm
        self.graph = gm.graph
        wanted = set(input_names) if input_names is not None else None
        self.inputs = [
            n for n in self.graph.nodes
            if n.op == "placeholder" and (n.name in wanted if wanted is not None else _placeholder_is_tensor(n))
            and not _discrete_placeholder(n)
        ]
        self.output = next(n for n in reversed(self.graph.nodes) if n.op == "output")
        self.facts: dict[fx.Node, Facts] = {}
        self.notes: list[str] = []
        """What the analysis could not settle (e.g. a fixpoint that did not converge)."""
        self.converged = True
        self._calls = {n: describe(n, gm) for n in self.graph.nodes if n.op.startswith("call")}
        self._composites = self._find_composites()
        self._readers: dict[fx.Node, list[fx.Node]] = {}
        for root, (_, z, _) in self._composites.items():
            self._readers.setdefault(z, []).append(root)
        self._run()

    # --- queries -------------------------------------------------------------------------------
    def __getitem__(self, node: fx.Node) -> Facts:
        return self.facts[node]

    def kind(self, value: Any) -> Kind:
        return self.facts[value].kind if isinstance(value, fx.Node) else Kind.CONST

    def dep(self, value: Any) -> bool:
        return self.kind(value) is not Kind.CONST

    def entry(self, node: fx.Node) -> ops.Op | None:
        """The registry entry of ``node``'s op (of the function a composite computes)."""
        facts = self.facts.get(node)
        op = facts.op if facts is not None else self._calls.get(node)
        return ops.lookup(op.name) if op is not None else None

    def role(self, node: fx.Node, arg: str) -> Role:
        entry = self.entry(node)
        return entry.role(arg) if entry is not None else Role.INPUT

    def dep_args(self, node: fx.Node) -> list[tuple[str, fx.Node]]:
        """(argument name, node) for the input-dependent, value-carrying arguments of ``node``."""
        facts = self.facts[node]
        if facts.op is None:
            return [("output", a) for a in flatten_nodes(node.args) if self.dep(a)] if node.op == "output" else []
        entry = ops.lookup(facts.op.name)
        out = []
        for name, value in facts.op.tensor_args():
            if (entry is not None and entry.role(name) in _SKIP) or not self.dep(value):
                continue
            if self.facts[value].category is Category.SHAPE:
                continue
            out.append((name, value))
        return out

    def factors(self, node: fx.Node) -> tuple[list[tuple[str, fx.Node]], list[tuple[str, fx.Node]]]:
        """For a product: (input-dependent factors, input-dependent denominators)."""
        factors, denoms = [], []
        for name, value in self.dep_args(node):
            role = self.role(node, name)
            if role is Role.DENOMINATOR:
                denoms.append((name, value))
            elif role is Role.FACTOR:
                factors.append((name, value))
        return factors, denoms

    def terms(self, node: fx.Node) -> list[list[tuple[str, fx.Node]]]:
        """The op as a sum of products: for each term, its input-dependent arguments (factors and
        denominators; an additive argument is a term of its own)."""
        entry = self.entry(node)
        deps = self.dep_args(node)
        if entry is not None and entry.terms is not None:
            return [[(n, v) for n, v in deps if n.split("[")[0] in term] for term in entry.terms]
        alone = [[(n, v)] for n, v in deps if self.role(node, n) not in _FACTOR_ROLES]
        product = [(n, v) for n, v in deps if self.role(node, n) in _FACTOR_ROLES]
        return alone + ([product] if product else [])

    def stream_factors(self, node: fx.Node, term: list[tuple[str, fx.Node]]) -> list[tuple[str, fx.Node]]:
        """The stream factors of one term (denominators are detached, not balanced)."""
        return [(n, v) for n, v in term if self.kind(v) is Kind.STREAM and self.role(node, n) is not Role.DENOMINATOR]

    def base(self, node: fx.Node) -> fx.Node:
        """The stream ``node`` is, up to elementwise scale and shift by constants (1.702 * x -> x)."""
        while True:
            facts = self.facts.get(node)
            if facts is None or facts.op is None or facts.op.name not in _AFFINE or facts.composite is not None:
                return node
            deps = self.dep_args(node)
            if len(deps) != 1:
                return node
            node = deps[0][1]

    def uses(self, node: fx.Node) -> Iterator[tuple[fx.Node, str]]:
        """(consumer, argument name) for every value-carrying use of ``node`` (a composite reads its
        input ``z`` directly)."""
        for user in [*node.users, *self._readers.get(node, ())]:
            if user.op == "output":
                yield user, "output"
                continue
            if self.facts[user].category is Category.SHAPE:
                continue  # reads metadata only (torch.export's _assert_tensor_metadata after a .to(dtype))
            for name, value in self.dep_args(user):
                if value is node:
                    yield user, name

    def interior(self, node: fx.Node) -> tuple[fx.Node, ...]:
        """The inner nodes of the composite ``node`` (empty for any other node), in graph order."""
        return self.facts[node].interior if node in self.facts else ()

    def units(self) -> dict[fx.Node, tuple[fx.Node, ...]]:
        """Last node -> the nodes that are one op with it, in graph order (only where there are several).

        Whoever reads a graph op by op (its biases, its local completeness) reads these as one op: a
        rule and the node it wraps (``scale_grad(x * y, 0.5)`` computes x * y and half its gradient;
        neither alone is an op of the model), a composite and its inner nodes, fused arithmetic and
        the ``factor_grad`` nodes that scale its factors' gradients."""
        from .rules import WRAPPED_ARG

        def parts(node: fx.Node) -> tuple[fx.Node, ...]:
            edges = tuple(a for a in node.all_input_nodes if set(a.users) == {node} and a in self._calls
                          and self._calls[a] is not None and self._calls[a].name == "libragrad.factor_grad")
            return self.interior(node) + edges + (node,)

        out: dict[fx.Node, tuple[fx.Node, ...]] = {}
        wrapped: set[fx.Node] = set()
        for node in self.graph.nodes:
            position = WRAPPED_ARG.get(node.target) if node.op == "call_function" else None
            inner = node.args[position] if position is not None and position < len(node.args) else None
            if isinstance(inner, fx.Node) and set(inner.users) == {node}:  # read through its rule only
                out[node] = parts(inner) + (node,)
                wrapped.add(inner)
        for node in self.graph.nodes:
            if node not in wrapped and node not in out and node.op.startswith("call") and len(parts(node)) > 1:
                out[node] = parts(node)
        return out

    # --- composites ----------------------------------------------------------------------------
    def _find_composites(self) -> dict[fx.Node, tuple[Composite, fx.Node, tuple[fx.Node, ...]]]:
        """Root -> (composite, its input z, its inner nodes), for every match whose inner nodes
        nothing else reads. Larger patterns first; a node is inner to at most one composite."""
        found: dict[fx.Node, tuple[Composite, fx.Node, tuple[fx.Node, ...]]] = {}
        taken: set[fx.Node] = set()
        patterns = sorted(ops.COMPOSITES, key=lambda c: -_size(c.pattern))
        for node in reversed(self.graph.nodes):  # outermost first: a root is never inner to another match
            if node in taken or node not in self._calls:
                continue
            for composite in patterns:
                bound: dict[str, fx.Node] = {}
                inner: list[fx.Node] = []
                if self._match(node, composite.pattern, bound, inner, root=True) and "z" in bound:
                    if taken.isdisjoint(inner):
                        order = {n: i for i, n in enumerate(self.graph.nodes)}
                        found[node] = (composite, bound["z"], tuple(sorted(inner, key=order.__getitem__)))
                        taken.update(inner)
                        break
        return found

    def _match(self, value: Any, pattern: Any, bound: dict, inner: list, root: bool = False) -> bool:
        if pattern == "z":
            if not isinstance(value, fx.Node):
                return False
            return bound.setdefault("z", value) is value
        if isinstance(pattern, numbers.Number):
            return isinstance(value, numbers.Number) and not isinstance(value, bool) and value == pattern
        if not isinstance(value, fx.Node) or value not in self._calls:
            return False
        call = self._calls[value]
        name, *patterns = pattern
        if call is None or call.name != name or call.inplace:
            return False
        if not root and len(value.users) != 1:
            return False
        operands = _operands(call)
        if operands is None or len(operands) != len(patterns):
            return False
        orders = [operands, operands[::-1]] if name == "add" else [operands]
        for order in orders:
            trial_bound, trial_inner = dict(bound), list(inner)
            if all(self._match(v, p, trial_bound, trial_inner) for v, p in zip(order, patterns)):
                bound.clear()
                bound.update(trial_bound)
                inner[:] = trial_inner + ([] if root else [value])
                return True
        return False

    # --- the classification --------------------------------------------------------------------
    def _run(self) -> None:
        overrides: dict[fx.Node, str] = {}
        for _ in range(_ROUNDS):  # each round resolves the stranded gates the previous one exposed
            self._classify_all(overrides)
            stranded = {o: r for o, r in self._stranded_origins().items() if overrides.get(o) != r}
            if not stranded:
                return
            # a gate that becomes an activation can turn what follows it back into a stream
            # (attention over sigmoid values): settle those before calling anything stranded,
            # and the zero-preserving ones before those whose f(0) would add a bias
            activations = {o: r for o, r in stranded.items() if r == "activation"}
            zero = {o: r for o, r in activations.items() if self._f0(o) == 0.0}
            overrides.update(zero or activations or stranded)
        self._classify_all(overrides)
        left = {o for o, r in self._stranded_origins().items() if overrides.get(o) != r}
        if left:
            self.converged = False
            self.notes.append(f"analysis: stranded gates still unresolved after {_ROUNDS} rounds "
                              f"({', '.join(sorted(n.name for n in left))}); they are reported as they stand")

    def _classify_all(self, overrides: dict[fx.Node, str]) -> None:
        self.facts = {}
        for node in self.graph.nodes:
            self.facts[node] = self._classify(node, overrides.get(node))
            node.meta[META] = self.facts[node]

    def _f0(self, node: fx.Node) -> float | None:
        entry, op = self.entry(node), self.facts[node].op
        spec = entry.activation_of(op) if entry is not None and op is not None else None
        return spec.f0 if spec is not None else None

    def _classify(self, node: fx.Node, override: str | None) -> Facts:
        facts = self._classify_op(node, override)
        if facts.kind is not Kind.CONST and _is_wrapped(node):
            return replace(facts, role="wrapped")
        return facts

    def _call(self, node: fx.Node) -> tuple[OpCall, dict]:
        """The node's op, or for a composite root the function it computes (and the composite's facts)."""
        match = self._composites.get(node)
        call = self._calls[node]
        if match is None:
            return call, {}
        composite, z, inner = match
        view = OpCall(composite.canonical, f"{call.spelling} = {composite}", {"input": z})
        return view, {"composite": composite, "scale": composite.scale, "interior": inner}

    def _classify_op(self, node: fx.Node, override: str | None) -> Facts:
        if node.op == "placeholder":
            return Facts(Kind.STREAM if node in self.inputs else Kind.CONST)
        if node.op in ("get_attr", "output"):
            return Facts(Kind.CONST)
        op, composite = self._call(node)
        entry = ops.lookup(op.name)
        category = entry.category_of(op) if entry is not None else ops.category_of(op.name)
        facts = Facts(Kind.CONST, op, category, **composite)
        self.facts[node] = facts  # dep_args reads the op back
        if category in (Category.SHAPE, Category.FACTORY, Category.DETACH):
            return facts  # detached values are constants for the backward
        deps = self.dep_args(node)
        if category is Category.SOURCE:
            return replace(facts, kind=Kind.STREAM) if self._any_dep(node) else facts
        if not deps:
            return facts
        if self._inner(node):
            facts = replace(facts, role="interior")
        first_gate = next((self.facts[a] for _, a in deps if self.facts[a].kind is Kind.GATE), None)
        family = (entry.family if entry is not None else None) or "gating"
        if op.name == "getitem" and isinstance(node.args[0], fx.Node):
            return self._getitem(node, facts)
        if override == "activation":
            return replace(facts, kind=Kind.STREAM, role="activation")
        if override in ("head", "stranded"):
            return replace(facts, kind=Kind.GATE, family=family, role=override, gate_of=self.base(deps[0][1]))
        nonlinear = [a for a, _ in deps if entry is not None and entry.role(a) is Role.NONLINEAR]
        if nonlinear:
            return replace(facts, kind=Kind.STREAM, issue=f"{', '.join(nonlinear)} depends on the input, and the op is "
                           "not linear in it: no rule")
        facts = self._classify_kind(node, facts, entry, deps, first_gate, family)
        if facts.kind is Kind.STREAM and facts.issue is None and entry is not None:
            return replace(facts, issue=self._unaccounted(node, entry))
        return facts

    def _classify_kind(self, node: fx.Node, facts: Facts, entry: ops.Op | None, deps: list, first_gate: Facts | None,
                       family: str) -> Facts:
        """Stream, gate or constant, from the category and the arguments' kinds and roles."""
        op, category = facts.op, facts.category
        kinds = {self.facts[a].kind for _, a in deps}
        if category is Category.NONDIFF:
            return replace(facts, kind=Kind.GATE, nondiff=True)
        if category is Category.GATE or (entry is not None and entry.bounds(op)):
            if Kind.STREAM not in kinds:
                return _inherit_gate(facts, first_gate)
            return replace(facts, kind=Kind.GATE, family=family, gate_of=self.base(deps[0][1]))
        if category is Category.NORM and Kind.STREAM in kinds:
            weights = [a for a, _ in deps if self.role(node, a) is Role.FACTOR and a != "input"]
            if weights and self.dep(op.input):
                return replace(facts, kind=Kind.STREAM, issue=f"an input-dependent {', '.join(weights)}: the norm's "
                               "rule takes a constant one (x_hat * w is then a product), no rule")
            return replace(facts, kind=Kind.STREAM)
        if category is Category.PRODUCT or self._multiplies(node):
            return self._product(node, replace(facts, category=Category.PRODUCT))
        if category in (Category.ACTIVATION, Category.NORM):
            if Kind.STREAM in kinds:
                return replace(facts, kind=Kind.STREAM)
            return _inherit_gate(facts, first_gate)
        if category is Category.ATTENTION and not any(self.role(node, a) is Role.SCORE for a, _ in deps):
            facts = replace(facts, category=Category.LINEAR)  # constant attention weights: linear in the values
            self.facts[node] = facts
            category = Category.LINEAR
        if category is Category.ATTENTION:
            value = op.args.get("value")
            return replace(facts, kind=self.kind(value)) if self.dep(value) else _inherit_gate(facts, first_gate)
        # structural, linear, piecewise, opaque: the output is a stream as soon as one operand is
        if Kind.STREAM in kinds:
            return replace(facts, kind=Kind.STREAM)
        return _inherit_gate(facts, first_gate)

    def _unaccounted(self, node: fx.Node, entry: ops.Op) -> str | None:
        """Why a stream op's constant part has no bias site to hold it (None: it has one, or none is needed).

        FullGrad reads a bias where a constant enters an additive argument. A constant chosen by the
        input (``maximum(x, c)``), or a product of constants added to a stream (``linear(c, W, b(x))``),
        enters elsewhere: no site holds it, so the op is reported."""
        present = self._present(node)
        choices = [(n, v) for n, v in present if entry.role(n) is Role.CHOICE]
        if any(self.dep(v) for _, v in choices) and any(not self.dep(v) for _, v in choices):
            constant = ", ".join(n for n, v in choices if not self.dep(v))
            return f"a constant ({constant}) chosen by an input-dependent comparison: no bias site holds it"
        for term in self.terms(node):
            denominators = [n for n, _ in term if self.role(node, n) is Role.DENOMINATOR]
            if denominators and not self.stream_factors(node, term) and len(self.terms(node)) > 1:
                return (f"a quotient by an input-dependent {', '.join(denominators)} with no stream factor, added to "
                        "a stream: no rule")
        if any(entry.role(n) is Role.ADDITIVE and not self.dep(v) for n, v in present):
            return None  # a bias site: the op evaluated with its streams at zero holds every constant part
        names = list(dict.fromkeys(n.split("[")[0] for n, _ in present))  # argument order: a stable message
        terms = entry.terms or ((*[n for n in names if entry.role(n) in _FACTOR_ROLES],),)
        for term in terms:
            args = [(n, v) for n, v in present if n.split("[")[0] in term]  # an absent factor is a 1
            if len(term) > 1 and args and not any(self.dep(v) for _, v in args):
                return (f"its constant part ({' * '.join(term)}) is added to a stream outside an additive argument: "
                        "no bias site holds it")
        return None

    def _present(self, node: fx.Node) -> list[tuple[str, Any]]:
        """(name, value) of every tensor argument (graph values, and a module's own parameters)."""
        op = self.facts[node].op
        out: list[tuple[str, Any]] = list(op.tensor_args())
        out += [(k, v) for k, v in op.args.items() if isinstance(v, torch.Tensor)]
        return out

    def _inner(self, node: fx.Node) -> bool:
        return any(node in inner for _, _, inner in self._composites.values())

    def _multiplies(self, node: fx.Node) -> bool:
        """A linear map some of whose factors beyond one depend on the input (a dynamic weight)."""
        factors, denominators = self.factors(node)
        return len(factors) + len(denominators) >= 2

    def _any_dep(self, node: fx.Node) -> bool:
        return any(self.dep(a) for a in flatten_nodes((node.args, node.kwargs)))

    def _getitem(self, node: fx.Node, facts: Facts) -> Facts:
        parent = node.args[0]
        parent_facts = self.facts[parent]
        index = node.args[1]
        entry = self.entry(parent) if parent_facts.op is not None else None
        outputs = entry.outputs if entry is not None else None
        what = outputs[index] if outputs and isinstance(index, int) and 0 <= index < len(outputs) else None
        if parent_facts.kind is not Kind.CONST and what == INDICES:
            return replace(facts, kind=Kind.GATE, nondiff=True, category=Category.STRUCTURAL)
        if parent_facts.kind is not Kind.CONST and what == STATISTIC:
            return replace(facts, kind=Kind.GATE, family="normalization", category=Category.STRUCTURAL)
        if parent_facts.kind is not Kind.CONST and what == MEAN:
            source = parent_facts.op.input if parent_facts.op is not None else None
            kind = self.kind(source)
            return replace(facts, kind=kind, category=Category.LINEAR) if kind is Kind.STREAM else replace(
                facts, kind=Kind.GATE, family="normalization", category=Category.LINEAR)
        return replace(parent_facts, op=facts.op, category=Category.STRUCTURAL, role=None, gate_of=parent_facts.gate_of,
                       issue=None, interior=(), composite=None, scale=1.0, balance=None, degree=1.0)

    def _product(self, node: fx.Node, facts: Facts) -> Facts:
        entry = self.entry(node)
        factors, denominators = self.factors(node)
        if entry is not None and entry.exponent is not None:
            return self._power(node, facts, entry, factors)
        terms = self.terms(node)
        degrees = [len(self.stream_factors(node, t)) for t in terms]
        streams = [a for n, a in self.dep_args(node) if self.kind(a) is Kind.STREAM
                   and self.role(node, n) is not Role.DENOMINATOR]
        if streams:
            degree = max([d for d in degrees] + [1])
            if degree <= 1:
                return replace(facts, kind=Kind.STREAM, degree=1.0)
            multi = [t for t, d in zip(terms, degrees) if d > 1]
            scaled = [a for t in multi for _, a in self.stream_factors(node, t)]
            if all(self.facts[a].op is not None and self.facts[a].op.name == "libragrad.factor_grad" for a in scaled):
                return replace(facts, kind=Kind.STREAM, degree=float(degree), role="wrapped")  # balanced already
            if len(terms) == 1:
                return replace(facts, kind=Kind.STREAM, degree=float(degree), balance="output")
            arguments = [n for t in terms for n, _ in t]
            if all(arguments.count(n) == 1 for t in multi for n, _ in self.stream_factors(node, t)):
                return replace(facts, kind=Kind.STREAM, degree=float(degree), balance="factors")
            if entry is not None and entry.rule is not None:
                return replace(facts, kind=Kind.STREAM, degree=float(degree), balance="rule")
            return replace(facts, kind=Kind.STREAM, degree=float(degree),
                           issue="products that share an argument, and no rule for this op")
        gates = [self.facts[a] for _, a in factors + denominators]
        if denominators and factors and all(g.kind is Kind.GATE for g in gates):
            # a weight map divided by its own total is a normalised weight map: attention's rule
            return replace(facts, kind=Kind.GATE, family="attention")
        if not factors and denominators:  # 1 / x: a reciprocal, a statistic
            return replace(facts, kind=Kind.GATE, family="normalization", gate_of=self.base(denominators[0][1]))
        return _inherit_gate(facts, next((g for g in gates if g.kind is Kind.GATE), None))

    def _power(self, node: fx.Node, facts: Facts, entry: ops.Op, factors) -> Facts:
        """x^p: a product of p streams for a constant p > 0, a statistic's reciprocal for p < 0."""
        exponent = entry.exponent if isinstance(entry.exponent, float) else facts.op.args.get(entry.exponent)
        base_kind = self.kind(facts.op.input)
        if self.dep(exponent) and base_kind is Kind.CONST:  # c^x = exp(x log c): a gate, like exp
            return replace(facts, kind=Kind.GATE, gate_of=self.base(exponent)) if self.kind(
                exponent) is Kind.STREAM else _inherit_gate(facts, self.facts[exponent])
        if self.dep(exponent):
            return replace(facts, kind=Kind.STREAM if Kind.STREAM in {base_kind, self.kind(exponent)} else Kind.GATE,
                           issue="an input-dependent exponent: no rule")
        if isinstance(exponent, numbers.Number) and exponent > 0 and base_kind is Kind.STREAM:
            return replace(facts, kind=Kind.STREAM, degree=float(exponent), balance="output")
        if base_kind is Kind.GATE:
            return _inherit_gate(facts, self.facts[facts.op.input])
        return replace(facts, kind=Kind.GATE, family="normalization", gate_of=self.base(factors[0][1]))

    def absorbed(self, node: fx.Node, _memo: dict | None = None) -> bool:
        """Does every use of the gate ``node`` end as a factor of a stream product (or a score path)?"""
        memo = {} if _memo is None else _memo
        if node in memo:
            return memo[node]
        memo[node] = True  # cycles cannot occur in an fx graph; this guards re-entry only
        result = True
        for user, arg in self.uses(node):
            if not self._absorbs(node, user, arg, memo):
                result = False
                break
        memo[node] = result
        return result

    def _absorbs(self, node: fx.Node, user: fx.Node, arg: str, memo: dict) -> bool:
        if user.op == "output":
            return False
        facts = self.facts[user]
        if facts.category is Category.ATTENTION and self.role(user, arg) is Role.SCORE:
            return True
        if facts.category is Category.PRODUCT and facts.kind is Kind.STREAM:
            if self.role(user, arg) is Role.DENOMINATOR:
                return True  # an input-dependent denominator is detached
            for term in self.terms(user):
                if any(a is node and n == arg for n, a in term) and self.stream_factors(user, term):
                    return True  # a gate factor of a term with a stream: detached there
        if facts.kind is Kind.GATE:
            return self.absorbed(user, memo)
        return False

    def _stranded_origins(self) -> dict[fx.Node, str]:
        """Gates some use of which is not a product factor: resolve where they come from."""
        origins: set[fx.Node] = set()
        memo: dict = {}
        for node, facts in self.facts.items():
            if facts.kind is not Kind.GATE or facts.nondiff or facts.role in ("head", "stranded"):
                continue
            if not self.absorbed(node, memo):
                origins.update(self._origins(node))
        resolved: dict[fx.Node, str] = {}
        for origin in origins:
            entry, op = self.entry(origin), self.facts[origin].op
            if self._reaches_output_structurally(origin):
                resolved[origin] = "head"
            elif entry is not None and entry.activation_of(op) is not None:
                resolved[origin] = "activation"
            elif op is not None and op.name in _HEADS and self._reaches_output_as_gate(origin):
                resolved[origin] = "head"  # a readout of the output distribution: sum_i log p(c_i)
            else:
                resolved[origin] = "stranded"
        return resolved

    def _origins(self, node: fx.Node) -> list[fx.Node]:
        """The gate-making ops upstream of a gate: where a stream became a gate."""
        out, stack, seen = [], [node], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            facts = self.facts[n]
            dep = [a for _, a in self.dep_args(n)]
            if any(self.facts[a].kind is Kind.STREAM for a in dep) or not dep:
                if facts.category is not Category.NONDIFF:
                    out.append(n)
                continue
            stack.extend(a for a in dep if self.facts[a].kind is Kind.GATE and not self.facts[a].nondiff)
        return out

    def _reaches_output_as_gate(self, node: fx.Node) -> bool:
        """Every use leads to the output through values computed from ``node`` alone (gates: no stream
        is mixed in), e.g. log-probabilities gathered and summed."""
        for user, _ in self.uses(node):
            if user.op != "output" and (self.facts[user].kind is not Kind.GATE or not self._reaches_output_as_gate(user)):
                return False
        return any(True for _ in self.uses(node))

    def _reaches_output_structurally(self, node: fx.Node) -> bool:
        for user, _ in self.uses(node):
            if user.op == "output":
                continue
            facts = self.facts[user]
            if facts.category not in (Category.STRUCTURAL,) or not self._reaches_output_structurally(user):
                return False
        return any(True for _ in self.uses(node))


def _operands(call: OpCall) -> list | None:
    """The operands a composite pattern matches, in order (None: settings that change the function)."""
    args = call.args
    if call.name == "add":
        return None if args.get("alpha", 1) != 1 else [args.get("input"), args.get("other")]
    if call.name == "div":
        return None if args.get("rounding_mode") is not None else [args.get("input"), args.get("other")]
    if call.name == "softplus" and (args.get("beta", 1) != 1):
        return None
    return [call.input]


def _size(pattern: Any) -> int:
    return 1 + sum(_size(p) for p in pattern[1:]) if isinstance(pattern, tuple) else 0


def _is_wrapped(node: fx.Node) -> bool:
    """A node whose value already goes through a rule (``scale_grad(node)``, ``identity_rule(x, node)``)."""
    from .rules import WRAPPED_ARG

    return any(u.op == "call_function" and u.target in WRAPPED_ARG and len(u.args) > WRAPPED_ARG[u.target]
               and u.args[WRAPPED_ARG[u.target]] is node for u in node.users)


def _inherit_gate(facts: Facts, gate: Facts | None) -> Facts:
    if gate is None:
        return replace(facts, kind=Kind.GATE)
    return replace(facts, kind=Kind.GATE, family=gate.family, nondiff=gate.nondiff, gate_of=gate.gate_of)


def _placeholder_is_tensor(node: fx.Node) -> bool:
    """Placeholders defaulting to a non-tensor (``attn_mask=None``, ``is_causal=False``) are settings."""
    meta = node.meta.get("val", node.meta.get("example_value"))
    if meta is not None:
        return isinstance(meta, torch.Tensor) and (meta.is_floating_point() or meta.is_complex())
    if node.args and _is_shape_value(node.args[0]):
        return False
    return True


def _discrete_placeholder(node: fx.Node) -> bool:
    """An integer or boolean tensor input (token ids, an attention mask) carries no gradient: a constant,
    never an input stream (a mask multiplying a stream would otherwise read as a product of two streams)."""
    meta = node.meta.get("val", node.meta.get("example_value"))
    return isinstance(meta, torch.Tensor) and not (meta.is_floating_point() or meta.is_complex())


def flatten_nodes(value: Any) -> list[fx.Node]:
    """The nodes in an argument structure (args, kwargs, nested lists), in order."""
    out: list[fx.Node] = []
    fx.node.map_arg(value, out.append)
    return out


@dataclass(frozen=True)
class Liveness:
    """Where gradient flows once a set of edges is cut."""

    live: frozenset
    """Nodes on a path from an input to the output."""
    to_output: frozenset
    """Nodes with a path to the output (an edit on their inputs can change the gradient)."""


def live_nodes(analysis: Analysis, cuts: Iterable[Cut]) -> Liveness:
    """Which nodes still carry gradient once ``cuts`` are applied."""
    cut = {(c.source, c.consumer, c.arg) for c in cuts}
    graph = nx.DiGraph()
    for node in analysis.graph.nodes:
        graph.add_node(node)
        for name, value in analysis.dep_args(node):
            if (value, node, name) not in cut:
                graph.add_edge(value, node)
    reach: set[fx.Node] = set()
    for source in analysis.inputs:
        reach |= nx.descendants(graph, source) | {source}
    to_output = nx.ancestors(graph, analysis.output) | {analysis.output}
    return Liveness(frozenset(reach & to_output), frozenset(to_output))
