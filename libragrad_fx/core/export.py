"""Ship a transformed model: ``torch.export`` with a dynamic batch dimension, saved as ``.pt2``.

``torch.export.load(FILE).module()`` run forward and backward gives the LibraGrad gradient for
any batch size, once ``import libragrad_fx`` has registered the ``torch.ops.libragrad`` custom ops
the program calls. The rules written with ``detach`` (attention's query and key, gate factors)
survive because the program stays in torch.export's default (training) IR: never call
``run_decompositions()`` on it, which lowers ``detach`` to ``alias`` and silently turns those
rules back into the vanilla gradient.

The file also holds ``libragrad/meta.json``: the transform's report, the input shape and image
normalisation, and a reference output (of a seeded random batch) so that ``check`` can prove the
reloaded program computes what the transformed model computed, bit for bit.
"""
from __future__ import annotations

import base64
import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from .capture import export_program, quiet_export
from .errors import UsageError, first_line
from .report import Report
from .rewrite import RULE_META

__all__ = ["Exported", "export", "save", "load", "program_rules", "reference_mismatch",
           "reference_input", "META_FILE"]

META_FILE = "libragrad/meta.json"
FORMAT = 1
_REFERENCE_SEED = 0


@dataclass
class Exported:
    program: torch.export.ExportedProgram
    module: nn.Module
    """``program.module()``: call it like the transformed model."""
    meta: dict[str, Any]

    @property
    def report(self) -> Report | None:
        return Report.from_dict(self.meta["report"]) if "report" in self.meta else None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        shape = self.meta.get("input_shape")
        return tuple(shape) if shape else _placeholder_shape(self.program)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.meta.get("mean", (0.485, 0.456, 0.406)))

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.meta.get("std", (0.229, 0.224, 0.225)))


def export(gm: nn.Module, example: torch.Tensor, notes: list[str] | None = None) -> torch.export.ExportedProgram:
    """Export a transformed model with a dynamic batch dimension (never decomposed: see the module doc).

    ``notes`` receives a line when torch.export refused the dynamic batch (the program is then static).
    """
    return export_program(gm, (example,), {}, notes)


def reference_input(shape: tuple[int, ...]) -> torch.Tensor:
    """The seeded batch of two whose output an exported file records."""
    return torch.randn((2, *shape[1:]), generator=torch.Generator().manual_seed(_REFERENCE_SEED))


def save(gm: fx.GraphModule, example: torch.Tensor, path: str, *, label: str = "",
         mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> Exported:
    """Export ``gm`` (a result of :func:`libragrad_fx.transform`) to ``path`` with its report."""
    notes: list[str] = []
    program = export(gm, example, notes)
    reference = reference_input(tuple(example.shape))
    with torch.no_grad():
        output = gm(reference)
    report = getattr(gm, "libragrad_report", None)
    meta: dict[str, Any] = {
        "format": FORMAT, "model": label, "torch": torch.__version__,
        "input_shape": list(example.shape), "notes": notes, "report": report.to_dict() if report is not None else None,
        "reference": {"seed": _REFERENCE_SEED, "outputs": [_encode(t) for t in _flat_tensors(output)]},
    }
    if report is None:
        del meta["report"]
    if mean is not None:
        meta["mean"], meta["std"] = list(mean), list(std)
    with warnings.catch_warnings():
        # weights that share storage (tied or sliced buffers) make the archive writer warn about
        # non-CPU devices; everything here is saved from CPU
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        torch.export.save(program, path, extra_files={META_FILE: json.dumps(meta)})
    return Exported(program, program.module(), meta)


def load(path: str) -> Exported:
    """Load a ``.pt2`` file; the ``torch.ops.libragrad`` ops it calls are registered by this package."""
    if not os.path.isfile(path):
        raise UsageError(f"no such file {path!r}: write one with `libragrad-fx export MODEL --out {path}`")
    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings(), quiet_export():  # a bad file is one line, not a logged traceback
            warnings.filterwarnings("ignore", message="No complete tensor found in the group")
            program = torch.export.load(path, extra_files=extra)
    except Exception as error:
        raise UsageError(f"cannot load {path!r} as a torch.export program ({type(error).__name__}: "
                         f"{first_line(error)}); was it written by `libragrad-fx export` or torch.export.save?"
                         ) from error
    meta = json.loads(extra[META_FILE]) if extra[META_FILE] else {}
    exported = Exported(program, program.module(), meta)
    if exported.report is not None:
        # what marks a transformed model for the attribution methods (they will not transform it again)
        exported.module.libragrad_report = exported.report
    return exported


def program_rules(program: torch.export.ExportedProgram) -> dict[str, int]:
    """Nodes of the program that apply a LibraGrad rule, by family (read from the nodes' own metadata).

    Backward-pruned ops (see :mod:`libragrad_fx.core.prune`) count under ``"pruning"``."""
    families: Counter[str] = Counter()
    for node in program.graph.nodes:
        rule = node.meta.get("custom", {}).get(RULE_META)
        if rule:
            families[rule[0]] += 1
    return dict(families)


def reference_mismatch(exported: Exported) -> str | None:
    """None when the loaded program reproduces the recorded reference output bit for bit, else why not."""
    recorded = exported.meta.get("reference")
    shape = exported.input_shape
    if not recorded or shape is None:
        return "the file records no reference output (not written by `libragrad-fx export`)"
    with torch.no_grad():
        outputs = _flat_tensors(exported.module(reference_input(shape)))
    expected = [_decode(t) for t in recorded["outputs"]]
    if len(outputs) != len(expected):
        return f"the program returns {len(outputs)} tensors, the file recorded {len(expected)}"
    for got, want in zip(outputs, expected):
        if got.shape != want.shape:
            return f"output shape {tuple(got.shape)} differs from the recorded {tuple(want.shape)}"
        if not torch.equal(got, want):
            return f"output differs from the recorded one by up to {float((got - want).abs().max()):.3g}"
    return None


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    leaves, _ = torch.utils._pytree.tree_flatten(value)
    return [t.detach() for t in leaves if isinstance(t, torch.Tensor)]


def _encode(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().contiguous().cpu()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
            "data": base64.b64encode(t.reshape(-1).view(torch.uint8).numpy().tobytes()).decode("ascii")}


def _decode(d: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, d["dtype"])
    raw = bytearray(base64.b64decode(d["data"]))
    if not raw:
        return torch.empty(d["shape"], dtype=dtype)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(d["shape"])


def _placeholder_shape(program: torch.export.ExportedProgram) -> tuple[int, ...] | None:
    """The first user input's shape, a symbolic (dynamic) dimension read as 1."""
    user = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user and isinstance(node.meta.get("val"), torch.Tensor):
            return tuple(d if isinstance(d, int) else 1 for d in node.meta["val"].shape)
    return None
