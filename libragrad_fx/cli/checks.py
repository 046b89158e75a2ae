"""Does the transform keep its promises on this model? (what ``libragrad-fx check`` runs)

1. forward: the transformed model's output is bit-identical to the model's (for a ``.pt2`` file,
   to the output its export recorded);
2. FullGrad completeness: <grad~_x f, x> + sum_j <grad~_b_j f, b_j> = f(x) (docs/METHOD.md);
3. bias-free Input x Gradient completeness: with every bias, positional embedding and class/register
   token zeroed, <grad~_x f, x> = f(x);
4. local completeness: y = sum_i J~_i x_i + b at every op on a gradient path (the worst ops; where it fails,
   the ops, and whether the transform's report names them);
and how long the transform and a LibraGrad backward take next to the vanilla ones (the median of
:data:`TIMING_REPEATS` runs each, after a warm-up). Each step shows on stderr while it runs
(:mod:`libragrad_fx.cli.progress`).
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from .progress import step

__all__ = ["Check", "CheckReport", "run_checks", "zero_biases", "ADDITIVE_NAMES", "TIMING_REPEATS"]

TIMING_REPEATS = 3
"""Forward+backward runs per model whose median ``check`` reports (after one warm-up run)."""

ADDITIVE_NAMES = ("bias", "pos_embed", "cls_token", "reg_token", "dist_token", "q_bias", "k_bias", "v_bias",
                  "running_mean", "absolute_pos_embed", "pos_embedding", "class_embedding",
                  "positional_embedding")
"""Parameter and buffer names (last component) that hold additive constants in timm / torchvision /
CLIP models; eval BatchNorm's shift b - mean * w / std is zero once both bias and running_mean are."""


@dataclass
class Check:
    name: str
    ok: bool | None
    """None: not applicable to this model (``detail`` says why)."""
    error: float | None = None
    limit: float | None = None
    detail: str = ""
    seconds: float = 0.0
    nodes: list[dict] = field(default_factory=list)
    """Per-node results (the local completeness check): node, op, error, bias, ok, reported."""


@dataclass
class CheckReport:
    model: str
    preset: str
    input_shape: list[int]
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    timing_repeats: int = TIMING_REPEATS
    """The fwd+bwd timings are the median of this many runs (the transform's is one run)."""

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "preset": self.preset, "input_shape": self.input_shape, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks], "timings": self.timings,
                "timing_repeats": self.timing_repeats}

    def __str__(self) -> str:
        lines = [f"{self.model}: preset {self.preset}, input {'x'.join(map(str, self.input_shape))}"]
        for c in self.checks:
            status = "ok  " if c.ok else "FAIL" if c.ok is False else "n/a "
            error = f"  error {c.error:.2e} (limit {c.limit:.0e})" if c.error is not None and c.limit else ""
            lines.append(f"  {status} {c.name:<42}{error}  [{c.seconds:.2f} s]")
            lines += [f"       {line}" for line in c.detail.splitlines() if line]
        if self.timings:
            lines.append(f"timings (fwd+bwd: median of {self.timing_repeats} runs after a warm-up): " + ", ".join(
                f"{k} {v:.2f}x" if k == "ratio" else f"{k} {v:.3f} s" for k, v in self.timings.items()))
        skipped = sum(c.ok is None for c in self.checks)
        verdict = "all checks hold" if self.ok else "some checks do not hold"
        lines.append(verdict + (f" ({skipped} not applicable)" if skipped else ""))
        return "\n".join(lines)


def zero_biases(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` with every parameter and buffer named in :data:`ADDITIVE_NAMES` zeroed."""
    clone = copy.deepcopy(model)
    zeroed = []
    with torch.no_grad():
        for name, tensor in [*clone.named_parameters(), *clone.named_buffers()]:
            last = name.split(".")[-1]
            if (last in ADDITIVE_NAMES or last.endswith("bias")) and tensor.is_floating_point():
                tensor.zero_()
                zeroed.append(name)
    return clone, zeroed


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _max(t: torch.Tensor) -> float:
    return float(t.max())


def run_checks(label: str, gm: nn.Module, x: torch.Tensor, *, original: nn.Module | None = None,
               forward: Callable[[], str | None] | None = None, preset: str = "libragrad",
               transform: Callable[[nn.Module], nn.Module] | None = None, tol: float = 1e-4,
               timings: dict[str, float] | None = None) -> CheckReport:
    """Run the checks on ``gm`` (a transformed model) at input ``x``.

    Args:
        original: the model ``gm`` was made from (forward equality, zeroed copy, timings); None for a
            program loaded from a ``.pt2`` file, whose ``forward`` callable compares with its record.
        transform: how to transform a bias-zeroed copy of ``original`` (None: ``gm`` is already a
            program; its copy is zeroed directly).
        tol: the relative completeness error allowed (float32 sums over many layers).
        timings: already measured (e.g. the transform's), shown first.
    """
    from ..attr.completeness import completeness, node_completeness

    report = CheckReport(label, preset, list(x.shape))
    # 1. forward
    step("checking the forward")
    if original is not None:
        probe = torch.randn((2, *x.shape[1:]), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            (same, seconds) = _timed(lambda: torch.equal(gm(probe), original(probe)))
        report.checks.append(Check("forward bit-identical", same, detail="" if same else
                                   "the transformed model's output differs from the model's", seconds=seconds))
    elif forward is not None:
        mismatch, seconds = _timed(forward)
        report.checks.append(Check("forward = recorded at export", mismatch is None, detail=mismatch or "",
                                   seconds=seconds))
    # 2. FullGrad
    step("checking FullGrad completeness")
    full, seconds = _timed(lambda: completeness(gm, x, method="fullgrad"))
    error = _max(full.rel_error)
    report.checks.append(Check("FullGrad completeness", error <= tol, error, tol, seconds=seconds,
                               detail=f"f(x) {_values(full.reference)}, attributed {_values(full.attributed)}"))
    # 3. bias-free Input x Gradient
    step("checking bias-free Input x Gradient completeness")
    report.checks.append(_bias_free_ixg(gm, original, transform, x, tol))
    # 4. per-node
    counted = step("checking local completeness, op by op")
    local, seconds = _timed(lambda: node_completeness(gm, x, tol=tol, progress=counted))
    report.checks.append(_local(local, gm, tol, seconds))
    step(f"timing fwd+bwd ({TIMING_REPEATS} runs each after a warm-up)")
    report.timings = {**(timings or {}), **_timings(gm, original, x)}
    return report


def _local(local, gm: nn.Module, tol: float, seconds: float) -> Check:
    """Local completeness, op by op: the worst ops, and whether the report names those that fail."""
    made = getattr(gm, "libragrad_report", None)
    reported = made.reported() if made is not None else set()
    bad = local.violations

    def row(c) -> str:
        named = "" if c.error <= tol else ", reported" if c.node in reported else ", NOT REPORTED"
        return f"{c.node} ({c.op}, {c.error:.1e}{named})"

    detail = f"{len(local.checks)} ops on gradient paths" + (
        ", not complete: " + ", ".join(row(c) for c in bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        if bad else ", all complete")
    worst = sorted(local.checks, key=lambda c: -c.error)[:3]
    if worst and not bad:
        detail += "\nworst: " + ", ".join(row(c) for c in worst)
    nodes = [{**asdict(c), "ok": c.error <= tol, "reported": c.node in reported} for c in local.checks]
    return Check("local completeness (every op)", not bad, max((c.error for c in local.checks), default=0.0), tol,
                 detail, seconds, nodes)


def _bias_free_ixg(gm: nn.Module, original: nn.Module | None, transform, x: torch.Tensor, tol: float) -> Check:
    from ..attr import FullGrad
    from ..attr.completeness import completeness

    start = time.perf_counter()
    if original is not None and transform is not None:
        zeroed_model, names = zero_biases(original)
        zeroed = transform(zeroed_model)
        step("checking bias-free Input x Gradient completeness")
    else:
        zeroed, names = zero_biases(gm)
        if hasattr(gm, "libragrad_report"):
            zeroed.libragrad_report = gm.libragrad_report
    ixg = completeness(zeroed, x, method="input_x_gradient")
    # what the names did not reach (a literal offset, a mask): FullGrad's bias share says
    left = FullGrad(zeroed).decompose(x)
    remaining = _max(left.bias_total.abs() / left.output.double().abs().clamp_min(1e-30))
    seconds = time.perf_counter() - start
    error = _max(ixg.rel_error)
    detail = f"{len(names)} bias tensors zeroed by name"
    if remaining > tol:
        return Check("bias-free Input x Gradient completeness", None, error, tol, detail +
                     f"; constants the names do not reach still carry {remaining:.1e} of f(x), "
                     "so Input x Gradient alone cannot be complete (FullGrad above covers them)", seconds)
    return Check("bias-free Input x Gradient completeness", error <= tol, error, tol, detail, seconds)


def _values(t: torch.Tensor, n: int = 3) -> str:
    items = [f"{float(v):.5g}" for v in t.flatten()[:n]]
    return "[" + ", ".join(items) + (", ...]" if t.numel() > n else "]")


def _timings(gm: nn.Module, original: nn.Module | None, x: torch.Tensor) -> dict[str, float]:
    """Median of :data:`TIMING_REPEATS` forward+backward runs (input gradient of the top logit), vanilla next
    to LibraGrad.

    A rough figure for the user; the benchmarks measure speed properly."""
    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            xi = x.detach().clone().requires_grad_(True)
            out = model(xi)
            torch.autograd.grad(out.flatten(1).max(1).values.sum(), xi)
        return run

    def median(fn: Callable[[], None]) -> float:
        fn()  # warm-up
        return statistics.median(_timed(fn)[1] for _ in range(TIMING_REPEATS))

    out = {"transformed fwd+bwd": median(step(gm))}
    if original is not None:
        out["vanilla fwd+bwd"] = median(step(original))
        out["ratio"] = out["transformed fwd+bwd"] / out["vanilla fwd+bwd"]
    return out
