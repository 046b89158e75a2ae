"""What the transform did: a certificate for every input-dependent node.

Deny by default: every input-dependent node of the graph lands in exactly one bucket of
:attr:`Report.buckets`: ``rewritten`` (a rule applies), ``skipped`` (the preset turned its rule
off), ``head`` (the output nonlinearity, kept), ``complete`` (complete as it is: linear,
piecewise linear, structural, a gate that only multiplies, ...), ``no gradient`` (the rules cut
every path through it), or ``unclassified`` (with the reason: unknown, opaque, known but not
complete, ...). Nothing is left out; whatever is not known to be complete is unclassified, and
the transform warns once (:class:`UnclassifiedOpWarning`) naming those nodes.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .verify import NodeCompleteness

__all__ = ["Rewritten", "Unclassified", "Report", "LibraGradWarning", "UnclassifiedOpWarning", "BUCKETS"]

BUCKETS = ("rewritten", "skipped", "head", "complete", "no gradient", "unclassified")
"""Where every input-dependent node lands, exactly once."""


class LibraGradWarning(UserWarning):
    """Something the transform could not certify (see the report)."""


class UnclassifiedOpWarning(LibraGradWarning):
    """Input-dependent ops that no pass could classify as complete or rewrite."""


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
    buckets: dict[str, int] = field(default_factory=dict)
    """How many input-dependent nodes landed in each of :data:`BUCKETS` (every one in exactly one)."""
    gradient: NodeCompleteness | None = None
    """With ``verify="gradient"``: local completeness of every op on a gradient path."""
    pixel_rule: str | None = None
    """The pixel readout on the layers that read the input (``dissent``), or None."""

    @property
    def rewrites(self) -> dict[str, int]:
        """Number of rewritten nodes per family."""
        return dict(Counter(family for _, family in {(r.node, r.family) for r in self.rewritten}))

    def families(self) -> set[str]:
        return {r.family for r in self.rewritten}

    def reported(self) -> set[str]:
        """Nodes the report says are not complete: unclassified, kept as the head, or skipped by the preset."""
        return {u.node for u in self.unclassified} | {h.node for h in self.head} | {s.node for s in self.skipped}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "preset": self.preset, "pixel_rule": self.pixel_rule, "capture": self.capture,
            "nodes": self.nodes,
            "rewrites": self.rewrites, "rewritten": [asdict(r) for r in self.rewritten],
            "skipped": [asdict(r) for r in self.skipped], "unclassified": [asdict(u) for u in self.unclassified],
            "head": [asdict(h) for h in self.head], "complete": dict(self.complete), "pruned": self.pruned,
            "backward": [asdict(b) for b in self.backward], "buckets": dict(self.buckets),
            "notes": list(self.notes), "forward_check": self.forward_check,
            "gradient": self.gradient.to_dict() if self.gradient is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """The inverse of :meth:`to_dict` (e.g. a report stored in an exported ``.pt2``)."""
        rows = {key: [Rewritten(**r) for r in data.get(key, [])] for key in ("rewritten", "skipped", "head", "backward")}
        gradient = data.get("gradient")
        return cls(model=data["model"], preset=data["preset"], capture=data["capture"], nodes=data["nodes"],
                   pixel_rule=data.get("pixel_rule"),
                   unclassified=[Unclassified(**u) for u in data.get("unclassified", [])],
                   complete=dict(data.get("complete", {})), pruned=data.get("pruned", 0),
                   notes=list(data.get("notes", [])), forward_check=data.get("forward_check"),
                   buckets=dict(data.get("buckets", {})),
                   gradient=NodeCompleteness.from_dict(gradient) if gradient else None, **rows)

    def warn(self) -> None:
        """One warning naming every unclassified node (none if there is none)."""
        if self.unclassified:
            shown = ", ".join(f"{u.node} ({u.op})" for u in self.unclassified[:8])
            more = f" and {len(self.unclassified) - 8} more" if len(self.unclassified) > 8 else ""
            warnings.warn(f"{self.model}: {len(self.unclassified)} input-dependent op(s) not classified: {shown}{more}; "
                          "their gradient is left vanilla and completeness may not hold: see report.unclassified",
                          UnclassifiedOpWarning, stacklevel=3)

    def silent(self) -> list:
        """Ops the gradient check found not complete that the report does not name (a certificate bug)."""
        if self.gradient is None:
            return []
        reported = self.reported()
        return [c for c in self.gradient.violations if c.node not in reported]

    def warn_silent(self) -> None:
        found = self.silent()
        if found:
            warnings.warn(f"{self.model}: the gradient check finds {len(found)} op(s) not locally complete that the "
                          "report does not name: " + ", ".join(f"{c.node} ({c.op}, {c.error:.1e})" for c in found[:8])
                          + "; please report this with the model", LibraGradWarning, stacklevel=3)

    def __str__(self) -> str:
        pixel = f", pixel rule {self.pixel_rule}" if self.pixel_rule else ""
        lines = [f"LibraGrad report: {self.model}  (preset {self.preset}{pixel}, captured with {self.capture}, "
                 f"{self.nodes} nodes)"]
        if self.forward_check:
            lines.append(f"forward check: {self.forward_check}")
        lines += [f"note: {n}" for n in self.notes]
        counts = ", ".join(f"{family} {n}" for family, n in sorted(self.rewrites.items())) or "none"
        lines.append(f"rewrites: {counts}; already complete: "
                     + (", ".join(f"{k} {v}" for k, v in sorted(self.complete.items())) or "none")
                     + f"; no gradient after the rules: {self.pruned} nodes")
        lines.append(self.buckets_line())
        lines += _table("rewritten", self.rewritten)
        lines += _table("skipped by preset", self.skipped)
        lines += _table("head (kept)", self.head)
        lines += _table("backward pruned", self.backward)
        lines += self.gradient_lines()
        return "\n".join(lines + [""] + self.unclassified_table())

    def buckets_line(self) -> str:
        total = sum(self.buckets.values())
        return f"input-dependent nodes: {total} (" + ", ".join(
            f"{name} {self.buckets[name]}" for name in BUCKETS if self.buckets.get(name)) + ")"

    def gradient_lines(self) -> list[str]:
        """The per-node gradient check (``verify="gradient"``), or nothing when it did not run."""
        if self.gradient is None:
            return []
        g = self.gradient
        bad = g.violations
        reported = self.reported()
        lines = [f"\ngradient check: {len(g.checks)} ops on gradient paths, worst relative error {g.worst:.1e} "
                 f"(limit {g.tol:g}): " + ("all complete" if not bad else f"{len(bad)} not complete, "
                                           f"{sum(c.node not in reported for c in bad)} of them not reported")]
        lines += [f"  {c.node}  {c.op}  {c.error:.1e}" + ("" if c.node in reported else "  (NOT REPORTED)")
                  for c in bad]
        return lines

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
