"""What each rule costs next to the op it replaces: forward + backward of one op, alone.

For every rule with a fused forward (GELU, SiLU, LayerNorm, RMSNorm), the custom op
``torch.ops.libragrad.*`` against the torch op the model called, on the shapes the benchmark models
and a LLaMA-style MLP run, in three contenders: vanilla, the rule as plain torch ops, and the rule with
the optional fused kernels (``libragrad_fx.core.kernels``). One call is ``y = op(x)`` then
``torch.autograd.grad(y, wanted, g)``: the op's custom-op wrapper, its saved tensors and its backward,
everything a model's backward pays per op. Contenders alternate round by round in one process;
reported: the median of per-round CPU-time ratios to vanilla, and the median time.

Before timing, each case checks that the rule's forward is bit-identical to the op's.

    python tools/bench_rules.py --tag cpu            # writes docs/bench/rules-cpu.md and .json
    python tools/bench_rules.py --rounds 3 --skip-kernels
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import libragrad_fx  # noqa: F401  (registers torch.ops.libragrad)

ROOT = Path(__file__).resolve().parents[1]
lib = torch.ops.libragrad


@dataclass
class Case:
    """One op on one shape: ``vanilla(x, *params)`` and ``rule(x, *params)``, gradients for x (and the
    parameters when ``param_grads``)."""

    name: str
    where: str
    shape: tuple[int, ...]
    vanilla: Callable
    rule: Callable
    params: Callable[[int], tuple[torch.Tensor, ...]] = lambda n: ()
    param_grads: bool = False


def cases(tiny: bool = False) -> list[Case]:
    """The cases, on the models' shapes (``tiny``: the same ops on small shapes, for tests)."""
    vit, convnext, llama_mlp, llama = (8, 197, 3072), (8, 56, 56, 384), (4, 512, 5504), (4, 512, 2048)
    vit_ln, convnext_ln = (8, 197, 768), (8, 56, 56, 96)
    if tiny:
        vit, convnext, llama_mlp, llama, vit_ln, convnext_ln = ((2, 5, 24),) * 6
    affine = lambda n: (torch.randn(n), torch.randn(n))  # noqa: E731
    weight = lambda n: (torch.randn(n),)  # noqa: E731
    gelu = lambda x: lib.gelu(x, "none")  # noqa: E731
    layer_norm = lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, 1e-6)  # noqa: E731
    layer_norm_rule = lambda x, w, b: lib.layer_norm(x, list(x.shape[-1:]), w, b, 1e-6)  # noqa: E731
    # what a call costs besides the arithmetic: the custom op's wrapper, saving, the rule's Python
    fixed = [] if tiny else [
        Case("GELU", "per-call cost (a 16-element tensor)", (2, 8), F.gelu, gelu),
        Case("LayerNorm", "per-call cost (a 16-element tensor)", (2, 8), layer_norm, layer_norm_rule, affine)]
    return fixed + [
        Case("GELU", "ViT-B MLP", vit, F.gelu, gelu),
        Case("GELU", "ConvNeXt-T stage 1 MLP", convnext, F.gelu, gelu),
        Case("GELU (tanh)", "ViT-B MLP", vit, lambda x: F.gelu(x, approximate="tanh"), lambda x: lib.gelu(x, "tanh")),
        Case("SiLU", "LLaMA-style MLP", llama_mlp, F.silu, lib.silu),
        Case("LayerNorm", "ViT-B", vit_ln, layer_norm, layer_norm_rule, affine),
        Case("LayerNorm", "ConvNeXt-T stage 1", convnext_ln, layer_norm, layer_norm_rule, affine),
        Case("LayerNorm, dw and db too", "ViT-B", vit_ln, layer_norm, layer_norm_rule, affine, param_grads=True),
        Case("RMSNorm", "LLaMA-style", llama, lambda x, w: F.rms_norm(x, x.shape[-1:], w, 1e-6),
             lambda x, w: lib.rms_norm(x, list(x.shape[-1:]), w, 1e-6), weight),
    ]


def _call(fn: Callable, x: torch.Tensor, params: tuple[torch.Tensor, ...], grad: torch.Tensor,
          param_grads: bool) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_(True)
    params = tuple(p.detach().requires_grad_(param_grads) for p in params)
    y = fn(x.view_as(x), *params)  # a non-leaf input, as inside a model (no copy)
    return torch.autograd.grad(y, (x, *params) if param_grads else (x,), grad)


def measure(case: Case, rounds: int, kernels_on: bool, target_s: float = 0.2) -> dict:
    """Time one case's contenders, alternating them; returns the table row."""
    from libragrad_fx.core import kernels

    torch.manual_seed(0)
    x = torch.randn(case.shape) * 2
    params = case.params(case.shape[-1])
    grad = torch.randn(case.shape)
    with torch.no_grad():
        if not torch.equal(case.rule(x, *params), case.vanilla(x, *params)):
            raise AssertionError(f"{case.name} ({case.where}): the rule's forward differs from the op's")

    kernels.disable()  # the plain rule runs as torch ops whatever LIBRAGRAD_FX_KERNELS says

    def contender(fn: Callable, fused: bool) -> Callable[[], None]:
        def run():
            if not fused:
                _call(fn, x, params, grad, case.param_grads)
                return
            with kernels.switched_on():  # on for this contender's call only
                _call(fn, x, params, grad, case.param_grads)
        return run

    runs = {"vanilla": contender(case.vanilla, False), "rule": contender(case.rule, False)}
    if kernels_on:
        runs["rule, kernels"] = contender(case.rule, True)
    for run in runs.values():  # warm-up (and the kernels' build)
        run()
    start = time.process_time()
    runs["vanilla"]()
    repeats = max(1, int(target_s / max(time.process_time() - start, 1e-6)))
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        names = list(runs)
        names = names[r % len(names):] + names[:r % len(names)]  # the first contender rotates
        for name in names:
            start = time.process_time()
            for _ in range(repeats):
                runs[name]()
            cpu[name].append((time.process_time() - start) / repeats)
    row = {"op": case.name, "where": case.where, "shape": list(case.shape), "rounds": rounds, "repeats": repeats,
           "vanilla_ms": 1e3 * statistics.median(cpu["vanilla"])}
    for name in runs:
        if name == "vanilla":
            continue
        key = name.replace(", ", "_")
        row[f"{key}_ms"] = 1e3 * statistics.median(cpu[name])
        row[f"{key}_ratio"] = statistics.median(a / b for a, b in zip(cpu[name], cpu["vanilla"]))
        row[f"{key}_min_ratio"] = min(cpu[name]) / min(cpu["vanilla"])  # the least disturbed rounds
    return row


def table(rows: list[dict], header: str) -> str:
    kernels_on = any("rule_kernels_ratio" in r for r in rows)
    head = "| op | where | shape | vanilla ms | rule ms | rule / vanilla | min ratio |"
    rule = "|---|---|---|---:|---:|---:|---:|"
    if kernels_on:
        head += " rule + kernels ms | rule + kernels / vanilla | min ratio |"
        rule += "---:|---:|---:|"
    lines = [header, "", head, rule]
    for r in rows:
        line = (f"| {r['op']} | {r['where']} | {'x'.join(map(str, r['shape']))} | {r['vanilla_ms']:.3f} | "
                f"{r['rule_ms']:.3f} | {r['rule_ratio']:.3f} | {r['rule_min_ratio']:.3f} |")
        if kernels_on:
            line += f" {r['rule_kernels_ms']:.3f} | {r['rule_kernels_ratio']:.3f} | {r['rule_kernels_min_ratio']:.3f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument("--skip-kernels", action="store_true", help="no fused-kernel contender (no C++ compiler here)")
    parser.add_argument("--tiny", action="store_true", help="small shapes: checks the script, measures nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for case in cases(args.tiny):
        rows.append(measure(case, args.rounds, not args.skip_kernels))
        r = rows[-1]
        print(f"{case.name} ({case.where}): rule {r['rule_ratio']:.3f}"
              + (f", with kernels {r['rule_kernels_ratio']:.3f}" if "rule_kernels_ratio" in r else "")
              + f" x vanilla ({r['vanilla_ms']:.2f} ms)", flush=True)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (f"# Rule backwards against the ops they replace, run `{args.tag}`\n\n"
              f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, float32, forward + "
              "backward of the op alone (custom-op wrapper included); ratios: median of per-round CPU-time ratios "
              "to vanilla; min ratio: of the minimum times (the least disturbed rounds). "
              f"Load average at the end {load} (1 / 5 / 15 min). Gradients for the input only, except "
              "'dw and db too'.")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rules-{args.tag}.md").write_text(table(rows, header))
    (args.out / f"rules-{args.tag}.json").write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))
    print(f"wrote {args.out / f'rules-{args.tag}.md'}, .json")


if __name__ == "__main__":
    main()
