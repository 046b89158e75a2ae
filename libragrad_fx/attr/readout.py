"""What a method explains: one scalar per sample, read from the model's outputs (its *target*).

Every method and :func:`libragrad_fx.completeness` take ``target=``:

* ``None``, an int, or one class per sample (a list or a tensor [B]): that class's *logit* of a
  ``[batch, classes]`` output (``None``: the predicted class). Completeness is defined on it.
* ``"prob"``, or :class:`Probability` ``(classes, multilabel=False)``: the class's softmax
  probability (sigmoid with ``multilabel=True``), the head kept with its ordinary backward (the
  reference implementation's default readout, "S1"). The head is not locally complete, so FullGrad
  does not sum to the probability.
* a callable ``readout(output) -> Tensor [B]``: any scalar per sample (a similarity, a margin, a
  sum of logits, a regression output). It receives the model's output exactly as the model
  returns it (a tensor, or a tuple/list/dict of them) for the batch of samples being explained,
  and returns a floating tensor of shape ``[B]``, one value per sample, computed with torch
  operations (no ``.item()``, no NumPy).

A readout is *traced into a graph* and transformed with the model's preset, so the rules apply to
it: ``F.normalize`` in a cosine similarity gets the unit-norm rule, and FullGrad stays complete
(the readout's own biases are bias sites like the model's). It is traced once per callable object
(and kept, :data:`libragrad_fx.attr.compiled.READOUTS_KEPT` at most): tensors it closes over become
constants of that trace, read in place (change them in place, or pass a new callable). Write
similarities as normalise-then-multiply (CLIP's spelling); ``F.cosine_similarity`` is one bounded
op with no rule (kept as the head with its vanilla gradient at the output, reported elsewhere). Model outputs that no attributed input reaches (a
text tower's embedding computed from further inputs) enter the readout as constants. Methods that
run several copies of the batch in one pass (Integrated Gradients' path points, SmoothGrad's noisy
copies) call the readout once per copy, so it may hold per-sample tensors for the B samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence, Union

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor
from torch.utils import _pytree as pytree

from .biases import Biases
from .compiled import Compiled

__all__ = ["Probability", "Readout", "ClassTarget", "Target", "CompiledReadout", "readout_of", "read",
           "resolve", "repeat", "class_index", "targets", "target_values"]

ClassTarget = Union[None, int, Sequence[int], Tensor]
Readout = Callable[[Any], Tensor]
Target = Union[ClassTarget, str, "Probability", Readout]


@dataclass(frozen=True, eq=False)
class Probability:
    """The probability of a class: ``softmax(logits)[target]`` (``sigmoid`` with ``multilabel``).

    ``target``: the class per sample as for a logit target (None: the predicted class). The softmax
    (sigmoid) is traced as the readout's head and keeps its ordinary backward ("S1").
    """

    target: ClassTarget = None
    multilabel: bool = False


def _logits(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"the model returns {type(output).__name__}; a class target reads a [batch, classes] "
                        "tensor output (pass target= a callable that maps the output to one value per sample)")
    if output.dim() != 2:
        raise ValueError(f"the model's output has shape {tuple(output.shape)}; a class target reads a "
                         "[batch, classes] output (pass target= a callable that maps it to one value per sample)")
    return output


def class_index(target: ClassTarget, batch: int, device: torch.device | str = "cpu") -> Tensor:
    """An explicit target (an int, or one per sample) as a class index per sample [B]."""
    if target is None:
        raise ValueError("target is None: the predicted class needs the model's output (use targets())")
    index = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1)
    if index.numel() == 1:
        return index.expand(batch)
    if index.numel() != batch:
        raise ValueError(f"target has {index.numel()} entries for a batch of {batch}: pass one per sample")
    return index


def targets(output: Any, target: ClassTarget) -> Tensor:
    """The class index per sample [B]: the predicted class for ``None``."""
    logits = _logits(output)
    if target is None:
        return logits.detach().argmax(-1)
    index = class_index(target, logits.shape[0], logits.device)
    if index.min() < 0 or index.max() >= logits.shape[1]:
        raise ValueError(f"target {index.tolist()} out of range for {logits.shape[1]} classes")
    return index


def target_values(output: Any, index: Tensor) -> Tensor:
    """f_t(x) per sample [B]: the target logit of each sample."""
    return _logits(output).gather(1, index[:, None])[:, 0]


def readout_of(target: Target) -> Probability | Readout | None:
    """The readout a target names: a :class:`Probability`, a callable, or None for a class's logit."""
    if isinstance(target, str):
        if target == "prob":
            return Probability()
        raise ValueError(f"unknown target {target!r}: pass a class index (None: the predicted class), 'prob', "
                         "libragrad_fx.attr.Probability(...) or a callable output -> [batch]")
    if isinstance(target, Probability) or (callable(target) and not isinstance(target, Tensor)):
        return target
    return None


def resolve(target: Target, forward: Callable[[], Any], batch: int, device: torch.device | str = "cpu") -> Target:
    """``target`` with its classes made explicit, a class index per sample, so that copies of the samples
    (path points, noisy inputs) explain the same class. ``forward()`` gives the model's output on the
    samples (called only when the predicted class is asked for)."""
    readout = readout_of(target)
    if readout is None:
        return targets(forward(), None) if target is None else class_index(target, batch, device)
    if isinstance(readout, Probability):
        classes = readout.target
        index = targets(forward(), None) if classes is None else class_index(classes, batch, device)
        return Probability(index, readout.multilabel)
    return readout


def repeat(target: Target, times: int) -> Target:
    """A resolved target for the samples stacked ``times`` over (class indices repeated; a callable
    is applied to each copy of the batch in turn)."""
    if isinstance(target, Tensor):
        return target.repeat(times)
    if isinstance(target, Probability) and isinstance(target.target, Tensor):
        return Probability(target.target.repeat(times), target.multilabel)
    return target


# --- traced readouts ------------------------------------------------------------------------

class _ReadoutModule(nn.Module):
    """``forward(out0, ..., out{n-1}[, index])``: the readout of the model's output, rebuilt from its
    tensor leaves (the other leaves fixed), the leaves no attributed input reaches detached."""

    def __init__(self, read: Callable, spec: pytree.TreeSpec, fixed: list[Any], streams: list[bool],
                 with_index: bool) -> None:
        super().__init__()
        self.read = read  # an nn.Module readout is registered, so its parameters are the graph's
        self.spec, self.fixed, self.streams, self.with_index = spec, fixed, streams, with_index

    def read_output(self, tensors: Sequence[Any], index: Any = None) -> Any:
        given = iter(tensors)
        leaves = [next(given) if leaf is _TENSOR else leaf for leaf in self.fixed]
        leaves = [leaf if stream or not isinstance(leaf, (Tensor, fx.Proxy)) else leaf.detach()
                  for leaf, stream in zip(leaves, self.streams)]
        output = pytree.tree_unflatten(leaves, self.spec)
        return self.read(output, index) if self.with_index else self.read(output)


_TENSOR = object()
"""Where a tensor leaf of the model's output goes (the readout's inputs fill them in order)."""


def _module(read: Callable, spec: pytree.TreeSpec, leaves: list[Any], streams: list[bool],
            with_index: bool) -> nn.Module:
    """A :class:`_ReadoutModule` whose forward names each tensor leaf: torch.fx makes one placeholder
    per named parameter (and one opaque tuple for ``*args``)."""
    fixed = [_TENSOR if isinstance(leaf, Tensor) else leaf for leaf in leaves]
    names = [f"out{i}" for i, leaf in enumerate(fixed) if leaf is _TENSOR]
    params = names + (["index"] if with_index else [])
    source = (f"def forward(self, {', '.join(params)}):\n"
              f"    return self.read_output(({''.join(n + ', ' for n in names)}), "
              f"{'index' if with_index else 'None'})\n")
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 (a signature made from leaf counts, no user text)
    cls = type("Readout", (_ReadoutModule,), {"forward": namespace["forward"]})
    return cls(read, spec, fixed, streams, with_index).eval()


def _probability(output: Tensor, index: Tensor, multilabel: bool) -> Tensor:
    p = torch.sigmoid(output) if multilabel else torch.softmax(output, -1)
    return p.gather(1, index[:, None])[:, 0]


class CompiledReadout:
    """A readout traced and transformed with the model's preset: ``gm(*tensor leaves[, index]) -> [B]``.

    ``report`` says what the rules did to it (``report.rewritten``; a kept softmax is in
    ``report.head``). ``streams[i]``: whether tensor leaf ``i`` depends on an attributed input.
    """

    def __init__(self, gm: fx.GraphModule, streams: list[bool], with_index: bool, source: Callable) -> None:
        self.gm = gm
        self.source = source
        """The callable traced (kept alive: the cache may key on its identity)."""
        self._made: dict[str, fx.GraphModule] = {}
        self.report = gm.libragrad_report
        self.streams = streams
        self.with_index = with_index

    @cached_property
    def biases(self) -> Biases:
        """The readout's own bias sites (its streams are the model's outputs an input reaches)."""
        placeholders = [n.name for n in self.gm.graph.nodes if n.op == "placeholder"]
        return Biases(self.gm, [name for name, stream in zip(placeholders, self.streams) if stream])

    def cached(self, key: str, build: Callable[[], fx.GraphModule]) -> fx.GraphModule:
        """A module made once per ``key`` from this readout (FullGrad's watched copy)."""
        if key not in self._made:
            self._made[key] = build()
        return self._made[key]


def _compile(compiled: Compiled, read: Callable, output: Any, with_index: bool,
             index: Tensor | None) -> CompiledReadout:
    from ..core.transform import transform

    leaves, spec = pytree.tree_flatten(output)
    streams = compiled.output_streams
    if len(streams) != len(leaves):  # the graph's output is not the pytree the module returns
        streams = [True] * len(leaves)  # unknown: every tensor leaf may depend on the inputs
    tensor_streams = [s for leaf, s in zip(leaves, streams) if isinstance(leaf, Tensor)]
    module = _module(read, spec, leaves, streams, with_index)
    example = tuple(leaf.detach() for leaf in leaves if isinstance(leaf, Tensor)) + ((index,) if with_index else ())
    gm = transform(module, example if len(example) > 1 else example[0], preset=compiled.preset)
    return CompiledReadout(gm, tensor_streams, with_index, read)


def _key(read: Any, output: Any) -> tuple:
    """One traced readout per callable and output structure (its non-tensor leaves are traced in)."""
    leaves, spec = pytree.tree_flatten(output)
    fixed = tuple(repr(leaf) if not isinstance(leaf, Tensor) else None for leaf in leaves)
    try:
        hash(read)
    except TypeError:  # the traced readout keeps the callable alive, so its id stays its own
        read = ("id", id(read))
    return (read, str(spec), fixed)


def compiled_readout(compiled: Compiled, readout: Probability | Readout, output: Any,
                     index: Tensor | None = None) -> CompiledReadout:
    """The traced readout for this model and output structure (traced on first use, then kept)."""
    if isinstance(readout, Probability):
        multilabel = readout.multilabel
        return compiled.readout(("probability", multilabel), lambda: _compile(
            compiled, lambda out, i: _probability(out, i, multilabel), output, True, index))
    return compiled.readout(_key(readout, output), lambda: _compile(compiled, readout, output, False, None))


def read(compiled: Compiled, output: Any, target: Target, samples: int | None = None,
         watch: Callable[[CompiledReadout, tuple], Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """(the target's value per row [R], the class index per row or None for a callable).

    ``samples``: the number of samples the readout is defined on; an output of ``k * samples`` rows
    (stacked copies) is read copy by copy by a callable. ``watch(readout, args) -> value``, if given,
    evaluates a traced readout instead of calling it (FullGrad collects the readout's biases there).
    """
    readout = readout_of(target)
    if readout is None:
        index = targets(output, target)
        return target_values(output, index), index

    def evaluate(r: CompiledReadout, args: tuple) -> Tensor:
        return watch(r, args) if watch is not None else r.gm(*args)

    if isinstance(readout, Probability):
        logits = _logits(output)
        index = targets(logits, readout.target)
        return evaluate(compiled_readout(compiled, readout, output, index), (logits, index)), index
    leaves = pytree.tree_leaves(output)
    tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
    if not tensors:
        raise TypeError(f"the model's output ({type(output).__name__}) holds no tensor for the readout to read")
    r = compiled_readout(compiled, readout, output)
    rows = tensors[0].shape[0] if tensors[0].dim() else 1
    copies = rows // samples if samples and rows % samples == 0 else 1
    values = []
    for k in range(copies):
        part = [t[k * samples:(k + 1) * samples] if copies > 1 and t.dim() and t.shape[0] == rows else t
                for t in tensors]
        value = evaluate(r, tuple(part))
        _check(value, rows // copies, readout)
        values.append(value)
    return (values[0] if copies == 1 else torch.cat(values)), None


def _check(value: Any, rows: int, readout: Readout) -> None:
    name = getattr(readout, "__name__", type(readout).__name__)
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise TypeError(f"target {name} returned {type(value).__name__}"
                        f"{'' if not isinstance(value, Tensor) else ' of ' + str(value.dtype)}; it must return a "
                        f"floating tensor of shape [{rows}], one value per sample")
    if tuple(value.shape) != (rows,):
        raise ValueError(f"target {name} returned shape {tuple(value.shape)}; it must return one value per "
                         f"sample, shape [{rows}]")
