"""Skip the backward work the rules pruned: found from the graph, applied with :mod:`pruned_ops`.

After the rules cut the score path, part of the backward computes gradients that are zero by
construction. Two cases, both read from gradient liveness (:func:`analysis.live_nodes` with the
rules' cuts), never from module names:

* **Column-sparse projections.** A linear map y = x W^T + b whose output is rearranged by
  structural ops (reshape, permute, unbind, chunk, getitem, ...) so that only some output
  features reach a live edge: timm's fused qkv (only v is live), BEiT's F.linear with a cat'ed
  q/v bias, EVA's, a key/value projection whose keys feed the detached score path. Which features
  are live is computed exactly by running the structural ops on a tensor of feature indices
  (shapes from a meta-device run of the graph on the example inputs). The linear becomes
  ``libragrad::linear_cols``: dx = dY[:, live] @ W[live].
* **Attention with constant weights.** A fused ``scaled_dot_product_attention`` whose query, key
  and mask carry no gradient becomes ``libragrad::attention``: dv = A^T dO only.

Both keep the forward kernel, so the forward stays bit-identical.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree

from libragrad_fx.passes import Replace, param

from .analysis import Analysis, Cut, Kind, Liveness, flatten_nodes
from .pruned_ops import OPS
from .rewrite import apply_edits
from .shapes import placeholder_values
from .spelling import describe

__all__ = ["Pruning", "plan", "apply", "meta_values"]

FAMILY = "pruning"

# Ops that only move or select elements: evaluated on a tensor of feature indices they say which
# output feature every element is. Anything else ends the structural cone.
_REARRANGE = frozenset({
    "view", "reshape", "permute", "transpose", "t", "flatten", "unflatten", "squeeze", "unsqueeze", "expand",
    "getitem", "chunk", "split", "split_with_sizes", "unbind", "tensor_split", "narrow", "select", "slice",
    "movedim", "moveaxis", "swapaxes", "view_copy", "permute_copy", "expand_copy", "unsqueeze_copy",
    "squeeze_copy", "slice_copy", "select_copy", "split_copy", "unbind_copy", "unsafe_split", "unsafe_chunk",
})
_IDENTITY = frozenset({"clone", "contiguous", "identity", "dropout", "alias", "alias_copy", "to"})


@dataclass(frozen=True)
class Pruning:
    """One node whose backward can skip pruned work."""

    node: fx.Node
    kind: str
    """``linear`` (column-sparse gradient) or ``attention`` (constant weights)."""
    live: tuple[int, ...] = ()
    """For ``linear``: the live output features as flat half-open ranges ``(start, stop, ...)``."""
    why: str = ""


def plan(analysis: Analysis, flow: Liveness, cuts: Iterable[Cut], example_inputs: Any = None,
         example_kwargs: dict | None = None, notes: list[str] | None = None) -> list[Pruning]:
    """Every node whose gradient work the cuts make partly zero, with what is still live."""
    cut = {(c.source, c.consumer, c.arg) for c in cuts}
    out: list[Pruning] = []
    for node, facts in analysis.facts.items():
        if node not in flow.live or facts.op is None or facts.kind is not Kind.STREAM:
            continue
        if facts.op.name == "scaled_dot_product_attention" and _constant_weights(analysis, node, flow, cut):
            out.append(Pruning(node, "attention", why="query, key and mask carry no gradient: dv = A^T dO only"))
    linears = [n for n, f in analysis.facts.items()
               if n in flow.live and f.op is not None and f.op.name == "linear" and f.kind is Kind.STREAM
               and not analysis.dep(f.op.args.get("weight")) and not analysis.dep(f.op.args.get("bias"))]
    if not linears:
        return out
    values = meta_values(analysis.gm, example_inputs, example_kwargs)
    if values is None:
        if notes is not None:
            notes.append("backward pruning of fused projections skipped: it needs example inputs (shapes)")
        return out
    for node in linears:
        features = _feature_count(node, values)
        live = _live_features(analysis, node, flow, cut, values, features) if features else None
        if live is None or live.all():
            continue
        ranges = _ranges(live)
        spans = ", ".join(f"[{s}, {e})" for s, e in zip(ranges[::2], ranges[1::2]))
        out.append(Pruning(node, "linear", tuple(ranges),
                           f"only output features {spans} of {features} reach a live edge"))
    return out


def apply(gm: fx.GraphModule, prunings: list[Pruning]) -> list[Replace]:
    """Swap each planned node for its pruned op, reading its arguments as they are now (after the rules)."""
    edits = []
    for p in prunings:
        op = describe(p.node, gm)
        if p.kind == "linear":
            args = (op.input, param(p.node, op, "weight"), param(p.node, op, "bias"), list(p.live))
            rule = "dx = dY[:, live] @ W[live]"
        else:
            a = op.args
            args = (a["query"], a["key"], a["value"], a.get("attn_mask"), float(a.get("dropout_p", 0.0)),
                    bool(a.get("is_causal", False)), a.get("scale"), bool(a.get("enable_gqa", False)))
            rule = "dv = A^T dO (A recomputed from q, k)"
        edits.append(Replace(p.node, FAMILY, rule, p.why, OPS[p.kind], args))
    if edits:
        apply_edits(gm, edits)
    return edits


# --- attention ---------------------------------------------------------------------------------

def _constant_weights(analysis: Analysis, node: fx.Node, flow: Liveness, cut: set) -> bool:
    op = analysis[node].op
    dropout = op.args.get("dropout_p", 0.0)
    if isinstance(dropout, fx.Node) or dropout != 0.0:
        return False  # a dropped-out attention map cannot be recomputed in the backward
    for name in ("query", "key", "attn_mask"):
        source = op.args.get(name)
        if isinstance(source, fx.Node) and analysis.dep(source) and (source, node, name) not in cut:
            return False
    value = op.args.get("value")
    return isinstance(value, fx.Node) and value in flow.live and (value, node, "value") not in cut


# --- column liveness ---------------------------------------------------------------------------

def _feature_count(node: fx.Node, values: dict[fx.Node, Any]) -> int | None:
    value = values.get(node)
    return int(value.shape[-1]) if isinstance(value, torch.Tensor) and value.dim() >= 1 else None


def _live_features(analysis: Analysis, linear: fx.Node, flow: Liveness, cut: set, values: dict, features: int):
    """A boolean mask over the output features of ``linear``: True where some gradient can arrive.

    The structural ops downstream of the linear run on a tensor holding each element's feature
    index; every cone value read through a live edge marks the features it holds.
    """
    shape = [int(s) for s in values[linear].shape]
    index = {linear: torch.arange(features, dtype=torch.int32).expand(shape)}
    live = torch.zeros(features, dtype=torch.bool)
    order = {n: i for i, n in enumerate(analysis.graph.nodes)}
    pending = [linear]
    while pending:
        node = min(pending, key=order.__getitem__)
        pending.remove(node)
        for user, arg in analysis.uses(node):
            if analysis[user].op is not None and analysis[user].op.inplace:
                return torch.ones(features, dtype=torch.bool)  # a write into the output: keep it whole
            if user not in index:
                result = _rearrange(analysis, user, index, values)
                if result is not None:
                    index[user] = result
                    pending.append(user)
                    continue
            if user in index:
                continue
            if user in flow.live and (node, user, arg) not in cut:
                if node is linear:
                    return torch.ones(features, dtype=torch.bool)  # read whole: nothing to prune
                for t in (v for v in pytree.tree_leaves(index[node]) if isinstance(v, torch.Tensor)):
                    live |= torch.bincount(t.reshape(-1), minlength=features) > 0
                if live.all():
                    return live
    return live


def _rearrange(analysis: Analysis, node: fx.Node, index: dict, values: dict) -> Any:
    """``node`` evaluated on feature indices, or None if it is not a pure rearrangement of the cone."""
    facts = analysis[node]
    if facts.op is None:
        return None
    name = facts.op.name
    if name not in _REARRANGE and name not in _IDENTITY:
        return None
    if node.op == "call_module" and not isinstance(facts.op.module, (nn.Identity, nn.Dropout)):
        return None
    tensors = [a for a in flatten_nodes((node.args, node.kwargs)) if a in index]
    others = [a for a in flatten_nodes((node.args, node.kwargs)) if a not in index]
    if len(tensors) != 1 or any(isinstance(values.get(a), torch.Tensor) or a not in values for a in others):
        return None  # another tensor operand (or an unknown value) takes part: not a rearrangement
    source = index[tensors[0]]
    if name in _IDENTITY or node.op == "call_module":
        return source
    args = fx.node.map_arg(node.args, lambda a: index[a] if a in index else values[a])
    kwargs = fx.node.map_arg(node.kwargs, lambda a: index[a] if a in index else values[a])
    try:
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)
    except Exception:  # an op that does not take an index tensor: end the cone there
        return None


def _ranges(mask: torch.Tensor) -> list[int]:
    """The True runs of a boolean mask as flat half-open ranges."""
    flat, start = [], None
    for i, on in enumerate(mask.tolist() + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            flat += [start, i]
            start = None
    return flat


# --- shapes ------------------------------------------------------------------------------------

def meta_values(gm: fx.GraphModule, example_inputs: Any, example_kwargs: dict | None = None) -> dict | None:
    """Every node's value with tensors on the meta device (shapes, no data); None without inputs.

    torch.export graphs carry them already (``node.meta["val"]``, symbolic sizes made concrete
    with their example hints); fx graphs are run once on meta tensors.
    """
    recorded = _recorded_values(gm)
    if recorded is not None:
        return recorded
    if example_inputs is None:
        return None
    inputs = placeholder_values(gm, example_inputs, example_kwargs)
    runner = _MetaInterpreter(gm)
    try:
        # restores the grad mode even where a failing op left it changed (a set_grad_enabled region that
        # raised on meta tensors: transformers 4.x's rotary embeddings run under no_grad)
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            runner.run(*(_to_meta(a) for a in inputs))
    except Exception:
        return None  # a data-dependent op: no shapes, no pruning of projections
    return runner.env


def _recorded_values(gm: fx.GraphModule) -> dict | None:
    values = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        if "val" not in node.meta:
            return None
        values[node] = _hinted(node.meta["val"])
    return values


def _hinted(value: Any) -> Any:
    """A fake value with symbolic sizes replaced by their example hints, as meta tensors and ints."""
    if isinstance(value, torch.SymInt):
        return value.node.hint
    if isinstance(value, torch.Tensor):
        return torch.empty([_hinted(s) for s in value.shape], dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_hinted(v) for v in value)
    return value


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        out = torch.empty_like(value, device="meta")
        return nn.Parameter(out, value.requires_grad) if isinstance(value, nn.Parameter) else out
    return value


class _MetaInterpreter(fx.Interpreter):
    """Runs a graph on meta tensors: parameters and buffers are swapped for meta stand-ins."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)  # every value stays in self.env

    def get_attr(self, target, args, kwargs) -> Any:
        return _to_meta(super().get_attr(target, args, kwargs))

    def call_module(self, target, args, kwargs) -> Any:
        module = self.fetch_attr(target)
        state = {k: _to_meta(v) for k, v in itertools.chain(module.named_parameters(), module.named_buffers())}
        return torch.func.functional_call(module, state, tuple(args), dict(kwargs))

