"""What the transform did: every rewrite with its rule, every op it could not classify."""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Rewritten", "Unclassified", "Report", "UnclassifiedOpWarning"]


class UnclassifiedOpWarning(UserWarning):
    """An input-dependent op that no pass could classify as complete or rewrite."""


@dataclass(frozen=True)
class Rewritten:
    node: str
    op: str
    family: str
    rule: str
    why: str


@dataclass(frozen=True)
class Unclassified:
    node: str
    op: str
    reason: str


@dataclass
class Report:
    model: str
    preset: str
    capture: str
    nodes: int
    rewritten: list[Rewritten] = field(default_factory=list)
    skipped: list[Rewritten] = field(default_factory=list)
    """Rewrites the preset turned off (its ablated families)."""
    unclassified: list[Unclassified] = field(default_factory=list)
    head: list[Rewritten] = field(default_factory=list)
    """Output nonlinearities kept as they are (softmax / sigmoid on the logits)."""
    complete: dict[str, int] = field(default_factory=dict)
    """Input-dependent ops already locally complete, by category (linear, piecewise, ...)."""
    pruned: int = 0
    """Input-dependent nodes that carry no gradient once the rules apply (score paths, statistics)."""
    backward: list[Rewritten] = field(default_factory=list)
    """Ops whose backward skips the pruned work (same forward kernel, same gradient; family ``pruning``)."""
    notes: list[str] = field(default_factory=list)
    forward_check: str | None = None

    @property
    def rewrites(self) -> dict[str, int]:
        """Number of rewritten nodes per family."""
        return dict(Counter(family for _, family in {(r.node, r.family) for r in self.rewritten}))

    def families(self) -> set[str]:
        return {r.family for r in self.rewritten}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "preset": self.preset, "capture": self.capture, "nodes": self.nodes,
            "rewrites": self.rewrites, "rewritten": [asdict(r) for r in self.rewritten],
            "skipped": [asdict(r) for r in self.skipped], "unclassified": [asdict(u) for u in self.unclassified],
            "head": [asdict(h) for h in self.head], "complete": dict(self.complete), "pruned": self.pruned,
            "backward": [asdict(b) for b in self.backward],
            "notes": list(self.notes), "forward_check": self.forward_check,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """The inverse of :meth:`to_dict` (e.g. a report stored in an exported ``.pt2``)."""
        rows = {key: [Rewritten(**r) for r in data.get(key, [])] for key in ("rewritten", "skipped", "head", "backward")}
        return cls(model=data["model"], preset=data["preset"], capture=data["capture"], nodes=data["nodes"],
                   unclassified=[Unclassified(**u) for u in data.get("unclassified", [])],
                   complete=dict(data.get("complete", {})), pruned=data.get("pruned", 0),
                   notes=list(data.get("notes", [])), forward_check=data.get("forward_check"), **rows)

    def warn(self) -> None:
        if self.unclassified:
            ops = ", ".join(sorted({u.op for u in self.unclassified}))
            warnings.warn(f"{self.model}: {len(self.unclassified)} input-dependent op(s) not classified ({ops}); "
                          "their gradient is left vanilla and completeness may not hold: see report.unclassified",
                          UnclassifiedOpWarning, stacklevel=3)

    def __str__(self) -> str:
        lines = [f"LibraGrad report: {self.model}  (preset {self.preset}, captured with {self.capture}, "
                 f"{self.nodes} nodes)"]
        if self.forward_check:
            lines.append(f"forward check: {self.forward_check}")
        lines += [f"note: {n}" for n in self.notes]
        counts = ", ".join(f"{family} {n}" for family, n in sorted(self.rewrites.items())) or "none"
        lines.append(f"rewrites: {counts}; already complete: "
                     + (", ".join(f"{k} {v}" for k, v in sorted(self.complete.items())) or "none")
                     + f"; no gradient after the rules: {self.pruned} nodes")
        lines += _table("rewritten", self.rewritten)
        lines += _table("skipped by preset", self.skipped)
        lines += _table("head (kept)", self.head)
        lines += _table("backward pruned", self.backward)
        return "\n".join(lines + [""] + self.unclassified_table())

    def unclassified_table(self) -> list[str]:
        """The unclassified ops, one line each (or a line saying there are none)."""
        if not self.unclassified:
            return ["unclassified: none"]
        width = max(len(u.node) for u in self.unclassified)
        return [f"unclassified ({len(self.unclassified)}), gradient left vanilla:"] + [
            f"  {u.node:<{width}}  {u.op:<28} {u.reason}" for u in self.unclassified]


def _table(title: str, rows: list[Rewritten]) -> list[str]:
    if not rows:
        return []
    width = max(len(r.node) for r in rows)
    op_width = min(max(len(r.op) for r in rows), 36)
    fam_width = max(len(r.family) for r in rows)
    out = [f"\n{title} ({len(rows)}):"]
    out += [f"  {r.node:<{width}}  {r.op:<{op_width}}  {r.family:<{fam_width}}  {r.rule}" for r in rows]
    return out
