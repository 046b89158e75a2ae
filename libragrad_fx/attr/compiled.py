"""A transformed model and what the attribution methods read from its graph, each found once.

Every method needs the same facts about the transformed graph: which nodes lie on a gradient path
(:class:`~libragrad_fx.core.analysis.Analysis`), the patch embedding whose grid token maps are laid
on, FullGrad's bias sites and the module that evaluates them, a CAM layer's tap, the attention
sites rollout reads, the traced readouts of callable targets. :class:`Compiled` holds them, each
computed on first use and kept: an ``attribute()`` call never traces or analyses the graph again.

One :class:`Compiled` exists per transformed GraphModule and number of attributed inputs; it
lives on the GraphModule (:func:`compiled_of`), so every method object, :func:`libragrad_fx.completeness`
and :func:`libragrad_fx.node_completeness` built on the same transformed model share it. A copy or a
pickle of the model starts without it. It assumes the graph is not edited after the first call
(assigning a new ``gm.graph`` is noticed and starts afresh).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from typing import Any, Callable, Hashable

import torch.fx as fx
from torch.utils import _pytree as pytree

from ..core.analysis import Analysis, live_nodes
from .biases import Biases
from .taps import blocks, patch_embedding

__all__ = ["Compiled", "compiled_of"]

_ATTRIBUTE = "_libragrad_compiled"
READOUTS_KEPT = 32
"""Traced readouts kept per model (least recently used dropped): a readout made anew for every call
is traced anew, and must not pile up."""


class _Store(dict):
    """The per-model store: a deep copy or a pickle of the model starts with an empty one."""

    def __deepcopy__(self, memo: dict) -> "_Store":
        return _Store()

    def __reduce__(self) -> tuple:
        return (_Store, ())


class Compiled:
    """The transformed graph ``gm`` read as a model of ``n_inputs`` attributed inputs (its first
    placeholders; the rest are further inputs, not attributed)."""

    def __init__(self, gm: fx.GraphModule, n_inputs: int) -> None:
        self.gm = gm
        self.n_inputs = n_inputs
        self.input_names = [n.name for n in gm.graph.nodes if n.op == "placeholder"][:n_inputs]
        report = getattr(gm, "libragrad_report", None)
        self.preset: str = report.preset if report is not None else "libragrad"
        self._products: dict[Hashable, Any] = {}
        self._readouts: OrderedDict[Hashable, Any] = OrderedDict()

    @cached_property
    def analysis(self) -> Analysis:
        """The graph's analysis, with the attributed inputs as its inputs."""
        return Analysis(self.gm, self.input_names)

    @cached_property
    def live(self) -> frozenset:
        """The nodes on a path from an attributed input to the output."""
        return live_nodes(self.analysis, []).live

    @cached_property
    def probe(self) -> fx.Node | None:
        """The patch embedding (first convolution on a gradient path): its grid is the token grid."""
        return patch_embedding(self.gm, self.analysis, self.live)

    @cached_property
    def blocks(self) -> list[str]:
        """The model's blocks on gradient paths, in order (``blocks.0``, ``blocks.1``...)."""
        return blocks(self.gm, self.live)

    @cached_property
    def biases(self) -> Biases:
        """FullGrad's bias sites (found from the graph)."""
        return Biases(self.gm, self.input_names, analysis=self.analysis)

    @cached_property
    def output_streams(self) -> list[bool]:
        """For each leaf of the graph's output (``torch.utils._pytree`` order): does it depend on an
        attributed input?"""
        output = next(n for n in reversed(self.gm.graph.nodes) if n.op == "output")
        leaves = pytree.tree_leaves(output.args[0])
        return [isinstance(leaf, fx.Node) and leaf in self.live for leaf in leaves]

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """What ``build()`` makes, made once per ``key`` (a method's taps, keyed by what they depend on)."""
        if key not in self._products:
            self._products[key] = build()
        return self._products[key]

    def readout(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """A traced readout, made once per ``key`` while among the last :data:`READOUTS_KEPT` used."""
        if key in self._readouts:
            self._readouts.move_to_end(key)
            return self._readouts[key]
        made = self._readouts[key] = build()
        while len(self._readouts) > READOUTS_KEPT:
            self._readouts.popitem(last=False)
        return made


def compiled_of(gm: fx.GraphModule, n_inputs: int) -> Compiled:
    """The :class:`Compiled` of a transformed GraphModule for ``n_inputs`` attributed inputs (made on
    first use and kept on ``gm``)."""
    store = gm.__dict__.get(_ATTRIBUTE)
    if not isinstance(store, _Store) or store.get("graph") is not gm.graph:
        store = _Store(graph=gm.graph)
        gm.__dict__[_ATTRIBUTE] = store
    if n_inputs not in store:
        store[n_inputs] = Compiled(gm, n_inputs)
    return store[n_inputs]
