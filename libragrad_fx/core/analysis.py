"""Graph analysis: which values depend on the input, and how (docs/METHOD.md section 2).

Every node gets a :class:`Facts` record in ``node.meta["libragrad"]``:

* ``CONST``: computed from parameters, buffers, literals and shapes only. A constant that
  enters a stream additively is a bias.
* ``STREAM``: degree one in the input under the rewritten backward (outputs of linear ops,
  gated activations, normalised values, attention outputs, products whose factors were balanced).
* ``GATE``: a bounded or statistical function of a stream (sigmoid, softmax, std, rsqrt, ...).
  Whoever multiplies by a gate must treat it as a constant; a gate that reaches a stream any
  other way is *stranded* and resolved once, here: an elementwise one becomes an activation
  (identity rule; f(0) is its bias where it is not zero: sigmoid, exp), one at the graph output
  is the head, anything else (a softmax, a statistic) is reported.

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

from .ops import GATE_FAMILY, OFFSET_GATES, ZERO_PRESERVING_GATES, Category, category_of
from .spelling import OpCall, describe

__all__ = ["Kind", "Facts", "Analysis", "Cut", "Liveness", "live_nodes", "flatten_nodes", "META"]

META = "libragrad"


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
    """How the analysis resolved the node: ``activation`` (a gate used as one), ``head``, ``stranded``."""
    degree: float = 1.0
    """For a product: the number of stream factors it multiplies (its degree of homogeneity)."""


@dataclass(frozen=True)
class Cut:
    """An edge whose gradient the rewrite stops: ``consumer``'s argument ``arg`` (the node ``source``)."""

    source: fx.Node
    consumer: fx.Node
    arg: str


# Ops that bound their output: gates where they multiply a stream, activations where they feed one.
_BOUNDED = frozenset({"relu6", "hardtanh"})
# Output nonlinearities that stay the head when the readout reduces them (a sum of log-probabilities)
_HEADS = frozenset({"softmax", "log_softmax"})
# Tuple-producing ops: which outputs are piecewise-constant indices or statistics.
_SIDE_OUTPUTS = {
    "max": Kind.GATE, "min": Kind.GATE, "sort": Kind.GATE, "topk": Kind.GATE, "kthvalue": Kind.GATE,
    "median": Kind.GATE, "cummax": Kind.GATE, "cummin": Kind.GATE, "max_pool": Kind.GATE,
    "layer_norm": Kind.GATE, "group_norm": Kind.GATE, "batch_norm": Kind.GATE,
    "scaled_dot_product_attention": Kind.GATE, "var_mean": Kind.GATE, "std_mean": Kind.GATE,
}
_NONDIFF_SIDE = frozenset({"max", "min", "sort", "topk", "kthvalue", "median", "cummax", "cummin", "max_pool"})
# Arguments that select rather than carry values: they never make an output input-dependent in value.
_SELECTORS = {"where": ("condition",), "masked_fill": ("mask",), "index_select": ("index",), "gather": ("index",),
              "take_along_dim": ("indices",), "index": ("indices",), "scatter": ("index",),
              "scatter_add": ("index",), "index_add": ("index",), "index_put": ("indices",),
              "masked_scatter": ("mask",), "embedding": ("input",), "getitem": ("index",),
              # arguments read for their shape or dtype only
              "expand_as": ("other",), "view_as": ("other",), "reshape_as": ("other",), "to": ("other",),
              # a value whose gradient the rule replaces by the surrogate's (an unrolled LSTM's)
              # rules: the gradient reaches the argument the rule differentiates, not the value it keeps
              "libragrad.straight_through": ("y",), "libragrad.identity_rule": ("y",)}
# Elementwise ops with a constant operand that keep a tensor's "base" (x, 1.702 * x, x / 6 + 0.5).
_AFFINE = frozenset({"mul", "div", "add", "sub", "rsub", "neg", "to", "clone", "dropout", "identity"})
# How each product names its factors; the remaining tensor arguments are additive.
_FACTORS = {"div": (("input",), ("other",)), "divide": (("input",), ("other",)),
            "addcmul": (("tensor1", "tensor2"), ()), "addcdiv": (("tensor1",), ("tensor2",)),
            "addmm": (("mat1", "mat2"), ()), "baddbmm": (("batch1", "batch2"), ()),
            "addbmm": (("batch1", "batch2"), ()), "bilinear": (("input1", "input2", "arg1"), ())}


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
        self._run()

    # --- queries -------------------------------------------------------------------------------
    def __getitem__(self, node: fx.Node) -> Facts:
        return self.facts[node]

    def kind(self, value: Any) -> Kind:
        return self.facts[value].kind if isinstance(value, fx.Node) else Kind.CONST

    def dep(self, value: Any) -> bool:
        return self.kind(value) is not Kind.CONST

    def dep_args(self, node: fx.Node) -> list[tuple[str, fx.Node]]:
        """(argument name, node) for the input-dependent, value-carrying arguments of ``node``."""
        facts = self.facts[node]
        if facts.op is None:
            return [("output", a) for a in flatten_nodes(node.args) if self.dep(a)] if node.op == "output" else []
        skip = _SELECTORS.get(facts.op.name, ())
        out = []
        for name, value in facts.op.tensor_args():
            base = name.split("[")[0]
            if base in skip or not self.dep(value):
                continue
            if self.facts[value].category is Category.SHAPE:
                continue
            out.append((name, value))
        return out

    def factors(self, node: fx.Node) -> tuple[list[tuple[str, fx.Node]], list[tuple[str, fx.Node]]]:
        """For a product: (input-dependent factors, input-dependent denominators)."""
        facts = self.facts[node]
        numerators, denominators = _FACTORS.get(facts.op.name, (None, ()))
        factors, denoms = [], []
        for name, value in self.dep_args(node):
            base = name.split("[")[0]
            if base in denominators:
                denoms.append((name, value))
            elif numerators is None or base in numerators:
                factors.append((name, value))
        return factors, denoms

    def base(self, node: fx.Node) -> fx.Node:
        """The stream ``node`` is, up to elementwise scale and shift by constants (1.702 * x -> x)."""
        while True:
            facts = self.facts.get(node)
            if facts is None or facts.op is None or facts.op.name not in _AFFINE:
                return node
            deps = self.dep_args(node)
            if len(deps) != 1:
                return node
            node = deps[0][1]

    def uses(self, node: fx.Node) -> Iterator[tuple[fx.Node, str]]:
        """(consumer, argument name) for every value-carrying use of ``node``."""
        for user in node.users:
            if user.op == "output":
                yield user, "output"
                continue
            if self.facts[user].category is Category.SHAPE:
                continue  # reads metadata only (torch.export's _assert_tensor_metadata after a .to(dtype))
            for name, value in self.dep_args(user):
                if value is node:
                    yield user, name

    # --- the classification --------------------------------------------------------------------
    def _run(self) -> None:
        overrides: dict[fx.Node, str] = {}
        for _ in range(8):  # each round resolves the stranded gates the previous one exposed
            self.facts = {}
            for node in self.graph.nodes:
                self.facts[node] = self._classify(node, overrides.get(node))
                node.meta[META] = self.facts[node]
            stranded = {o: r for o, r in self._stranded_origins().items() if overrides.get(o) != r}
            if not stranded:
                return
            # a gate that becomes an activation can turn what follows it back into a stream
            # (attention over sigmoid values): settle those before calling anything stranded,
            # and the zero-preserving ones before those whose f(0) would add a bias
            activations = {o: r for o, r in stranded.items() if r == "activation"}
            zero = {o: r for o, r in activations.items() if self.facts[o].op.name not in OFFSET_GATES}
            overrides.update(zero or activations or stranded)

    def _classify(self, node: fx.Node, override: str | None) -> Facts:
        facts = self._classify_op(node, override)
        if facts.kind is not Kind.CONST and _is_wrapped(node):
            return replace(facts, role="wrapped")
        return facts

    def _classify_op(self, node: fx.Node, override: str | None) -> Facts:
        if node.op == "placeholder":
            return Facts(Kind.STREAM if node in self.inputs else Kind.CONST)
        if node.op == "get_attr":
            return Facts(Kind.CONST)
        if node.op == "output":
            return Facts(Kind.CONST)
        op = describe(node, self.gm)
        category = category_of(op.name)
        if op.name == "clamp" and op.args.get("min") == 0 and op.args.get("max") is None:
            category = Category.PIECEWISE  # clamp(min=0) is relu
        if op.name == "batch_norm":
            category = Category.NORM if _bn_training(op) else Category.LINEAR  # eval-mode BN is affine
        facts = Facts(Kind.CONST, op, category)
        self.facts[node] = facts  # dep_args reads the op back
        if category in (Category.SHAPE, Category.FACTORY, Category.DETACH):
            return facts  # detached values are constants for the backward
        deps = self.dep_args(node)
        if category is Category.SOURCE:
            return replace(facts, kind=Kind.STREAM) if self._any_dep(node) else facts
        if not deps:
            return facts
        kinds = {self.facts[a].kind for _, a in deps}
        first_gate = next((self.facts[a] for _, a in deps if self.facts[a].kind is Kind.GATE), None)
        if op.name == "getitem" and isinstance(node.args[0], fx.Node):
            return self._getitem(node, facts)
        if override == "activation":
            return replace(facts, kind=Kind.STREAM, role="activation")
        if override in ("head", "stranded"):
            return replace(facts, kind=Kind.GATE, family=GATE_FAMILY.get(op.name, "gating"), role=override,
                           gate_of=self.base(deps[0][1]))
        if category is Category.NONDIFF:
            return replace(facts, kind=Kind.GATE, nondiff=True)
        if category is Category.GATE or (op.name in _BOUNDED) or (op.name == "clamp" and _bounded_clamp(op)):
            if Kind.STREAM not in kinds:
                return _inherit_gate(facts, first_gate)
            return replace(facts, kind=Kind.GATE, family=GATE_FAMILY.get(op.name, "gating"),
                           gate_of=self.base(deps[0][1]))
        if category is Category.PRODUCT:
            return self._product(node, facts)
        if category in (Category.ACTIVATION, Category.NORM):
            if Kind.STREAM in kinds:
                return replace(facts, kind=Kind.STREAM)
            return _inherit_gate(facts, first_gate)
        if category is Category.ATTENTION and not any(a.split("[")[0] in ("query", "key", "attn_mask")
                                                       for a, _ in deps):
            category = Category.LINEAR  # constant attention weights: linear in the values
            facts = replace(facts, category=category)
            self.facts[node] = facts
        if category is Category.ATTENTION:
            value = op.args.get("value")
            return replace(facts, kind=self.kind(value)) if self.dep(value) else _inherit_gate(facts, first_gate)
        # structural, linear, piecewise, opaque: the output is a stream as soon as one operand is
        if Kind.STREAM in kinds:
            return replace(facts, kind=Kind.STREAM)
        return _inherit_gate(facts, first_gate)

    def _any_dep(self, node: fx.Node) -> bool:
        return any(self.dep(a) for a in flatten_nodes((node.args, node.kwargs)))

    def _getitem(self, node: fx.Node, facts: Facts) -> Facts:
        parent = node.args[0]
        parent_facts = self.facts[parent]
        index = node.args[1]
        parent_name = parent_facts.op.name if parent_facts.op is not None else None
        if parent_name in _SIDE_OUTPUTS and isinstance(index, int) and index > 0 and parent_facts.kind is not Kind.CONST:
            return replace(facts, kind=Kind.GATE, nondiff=parent_name in _NONDIFF_SIDE,
                           family=None if parent_name in _NONDIFF_SIDE else "normalization")
        return replace(parent_facts, op=facts.op, category=Category.STRUCTURAL, role=None, gate_of=parent_facts.gate_of)

    def _product(self, node: fx.Node, facts: Facts) -> Facts:
        op = facts.op
        factors, denominators = self.factors(node)
        if op.name in ("pow", "float_power"):
            exponent = op.args.get("exponent")
            base_kind = self.kind(op.args.get("input"))
            if isinstance(exponent, numbers.Number) and exponent > 0 and base_kind is Kind.STREAM:
                return replace(facts, kind=Kind.STREAM, degree=float(exponent))
            return replace(facts, kind=Kind.GATE, family="normalization", gate_of=self.base(factors[0][1]))
        if op.name == "square":
            if self.kind(op.args.get("input")) is Kind.STREAM:
                return replace(facts, kind=Kind.STREAM, degree=2.0)
            return _inherit_gate(facts, self.facts[factors[0][1]])
        streams = [a for _, a in factors if self.facts[a].kind is Kind.STREAM]
        if op.name in ("prod", "cumprod"):
            return replace(facts, kind=Kind.STREAM, category=Category.OPAQUE) if streams else _inherit_gate(
                facts, self.facts[factors[0][1]])
        if streams:
            return replace(facts, kind=Kind.STREAM, degree=float(len(streams)))
        gates = [self.facts[a] for _, a in factors + denominators]
        if denominators and factors and all(g.kind is Kind.GATE for g in gates):
            # a weight map divided by its own total is a normalised weight map: attention's rule
            return replace(facts, kind=Kind.GATE, family="attention")
        if not factors and denominators:  # 1 / x: a reciprocal, a statistic
            return replace(facts, kind=Kind.GATE, family="normalization", gate_of=self.base(denominators[0][1]))
        return _inherit_gate(facts, next((g for g in gates if g.kind is Kind.GATE), None))

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
        name = arg.split("[")[0]
        if facts.category is Category.ATTENTION and name in ("query", "key", "attn_mask"):
            return True
        if facts.category is Category.PRODUCT and facts.kind is Kind.STREAM:
            factors, denominators = self.factors(user)
            if any(a is node for _, a in factors + denominators):
                return True
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
            name = self.facts[origin].op.name
            if self._reaches_output_structurally(origin):
                resolved[origin] = "head"
            elif name in ZERO_PRESERVING_GATES or name in OFFSET_GATES or name in _BOUNDED or name == "clamp":
                resolved[origin] = "activation"
            elif name in _HEADS and self._reaches_output_as_gate(origin):
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


def _is_wrapped(node: fx.Node) -> bool:
    """A node whose value already goes through a rule (``scale_grad(node)``, ``identity_rule(x, node)``)."""
    from .rules import WRAPPED_ARG

    return any(u.op == "call_function" and u.target in WRAPPED_ARG and len(u.args) > WRAPPED_ARG[u.target]
               and u.args[WRAPPED_ARG[u.target]] is node for u in node.users)


def _inherit_gate(facts: Facts, gate: Facts | None) -> Facts:
    if gate is None:
        return replace(facts, kind=Kind.GATE)
    return replace(facts, kind=Kind.GATE, family=gate.family, nondiff=gate.nondiff, gate_of=gate.gate_of)


def _bn_training(op: OpCall) -> bool:
    if op.module is not None:
        module = op.module
        return module.training or module.running_mean is None
    training = op.args.get("training", False)
    return bool(training) or op.args.get("running_mean") is None


def _bounded_clamp(op: OpCall) -> bool:
    low, high = op.args.get("min"), op.args.get("max")
    return low is not None and high is not None


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
