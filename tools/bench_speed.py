"""What an explanation costs: LibraGrad and its peers against vanilla Input x Gradient.

Every ratio is like for like: each contender runs in one parameter setting (parameters frozen
for the call, or left requiring grad as users often run a model) and is compared with vanilla IxG
in that same setting. For each model, one process times every contender on the same batch,
alternating them round by round (the first contender rotates), after one warm-up call each: the
time of forward + backward for one explanation batch (gradients for the input only,
``torch.autograd.grad(f, x)``), as wall time and as this process's CPU time. Reported: medians over
the rounds, and the median of the per-round ratios to the baseline (ratios from the same round, so
machine load cancels as far as it can).

Beside each measured ratio stands the ratio the FLOP count predicts, counted from the ops each
contender runs (:mod:`libragrad_fx.bench.cost`: matrix-product FLOPs of the forward and the
backward, the transformed graph's pruned ops included), and the bytes autograd saves for the
backward (unique storages, parameters and buffers excluded). Peak memory is measured with each
contender alone in a fresh subprocess (max RSS, and max RSS minus the RSS before the explanation).
AttnLRP / CP-LRP run in the lxt environment, in their own process, because lxt patches torch classes
process-wide; there they are timed against a vanilla IxG of that same process (lxt's class patches
are put on and taken off between calls).

    python tools/bench_speed.py --tag run1            # every model, batch 8
    python tools/bench_speed.py --models vit_small_patch16_224 --runs 5 --skip memory lxt
    python tools/bench_speed.py --models mixer_b16_224 --only "libragrad IxG, kernels"   # one contender

Contenders named ``..., kernels`` run with the optional fused rule kernels (``libragrad_fx.core.kernels``,
built here on first use; ``--skip kernels`` where there is no C++ compiler).

Writes ``docs/bench/speed-<tag>.csv``, ``.md`` and ``.json``. Threads default to 1: the benchmark
machine has two cores shared with other jobs, and one thread per process keeps CPU time meaningful.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_rss import second_call_peak  # noqa: E402  (tools/, beside this script)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vit_small_patch16_224", "vit_base_patch16_224", "eva02_small_patch14_224", "mixer_b16_224", "convnext_tiny",
          "swin_tiny_patch4_window7_224")
LXT_PYTHON = os.environ.get("LXT_PYTHON", "/work/venv-lxt/bin/python")
TARGET = 1
IG_STEPS = 32


# --- models and inputs -----------------------------------------------------------------------

def build(name: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model with random weights (no download), eval mode, and a fixed random batch."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(1))
    return model, x


def input_x_gradient(f: Callable, x: torch.Tensor) -> torch.Tensor:
    """x * d f_t / dx for the target logit, gradients requested for the input only."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x)[:, TARGET].sum(), x)
    return x.detach() * grad


# --- contenders (main process) ---------------------------------------------------------------

VANILLA = {True: "vanilla IxG, frozen", False: "vanilla IxG"}
"""The baseline of each parameter setting (frozen for the call or not)."""


@dataclass
class Contender:
    name: str
    make: Callable[[], Callable[[], Any]]
    """Builds the contender (transform, compile, method objects) and returns its explanation call."""
    note: str = ""
    frozen: bool = True
    """The parameter setting its call runs in; it is compared with vanilla IxG in the same setting."""
    baseline: str | None = None
    """The contender it is compared with; default: vanilla IxG in the same parameter setting."""
    counted: bool = True
    """Whether FLOPs and saved bytes are counted (not for compiled code: a dispatch mode would trace it again)."""
    run: Callable[[], Any] | None = None

    @property
    def setting(self) -> str:
        return "frozen" if self.frozen else "require grad"

    @property
    def base(self) -> str:
        return self.baseline or VANILLA[self.frozen]

    def build(self) -> "Contender":
        if self.run is None:
            self.run = self.make()
        return self


def contenders(name: str, model: torch.nn.Module, x: torch.Tensor, wanted: set[str], compile_: bool) -> list[Contender]:
    """Every contender for one model, unbuilt: a memory probe builds only the one it measures."""
    import libragrad_fx as lf
    from libragrad_fx.core.frozen import frozen_parameters

    example = x[:1]
    transformed = functools.cache(lambda: lf.transform(model, example))

    def frozen(fn: Callable) -> Callable:
        def run():
            with frozen_parameters(model):
                return fn()
        return run

    def ixg(module_of: Callable[[], torch.nn.Module], freeze: bool) -> Callable[[], Callable]:
        def make():
            module = module_of()
            run = lambda: input_x_gradient(module, x)  # noqa: E731
            return frozen(run) if freeze else run
        return make

    def fused(make: Callable[[], Callable]) -> Callable[[], Callable]:
        """The same call with the optional fused rule kernels on (libragrad_fx.core.kernels)."""
        def make_fused():
            from libragrad_fx.core import kernels
            inner = make()

            def run():  # on only inside this contender's call (built by its warm-up call)
                with kernels.switched_on():
                    return inner()
            return run
        return make_fused

    def compiled():
        with frozen_parameters(model):
            return torch.compile(transformed(), fullgraph=True)

    out = [
        Contender("vanilla IxG", ixg(lambda: model, False), "as users often run it", frozen=False),
        Contender("vanilla IxG, frozen", ixg(lambda: model, True), "parameters frozen for the call"),
        Contender("libragrad IxG", ixg(transformed, False), "", frozen=False),
        Contender("libragrad IxG, frozen", ixg(transformed, True), "frozen_parameters(): what libragrad_fx.attr runs"),
    ]
    if "unpruned" in wanted:
        out.append(Contender("libragrad IxG, unpruned", ixg(lambda: lf.transform(model, example, prune=False), True),
                             "transform(prune=False)"))
    if "kernels" in wanted:
        out += [Contender("libragrad IxG, kernels", fused(ixg(transformed, False)), "fused rule kernels on",
                          frozen=False),
                Contender("libragrad IxG, frozen, kernels", fused(ixg(transformed, True)),
                          "fused rule kernels on (LIBRAGRAD_FX_KERNELS=1)")]
    if compile_:
        out.append(Contender("libragrad IxG, compiled", ixg(compiled, True), "torch.compile(fullgraph=True)",
                             counted=False))
    try:
        from libragrad_fx import attr
    except ImportError:
        return out
    target = [TARGET] * x.shape[0]
    fullgrad = lambda: frozen(functools.partial(attr.FullGrad(transformed()).attribute, x, target=target))  # noqa: E731
    out.append(Contender("libragrad FullGrad", fullgrad, "libragrad_fx.attr.FullGrad"))
    if "kernels" in wanted:
        out.append(Contender("libragrad FullGrad, kernels", fused(fullgrad), "fused rule kernels on"))
    if "ig" in wanted:
        out.append(Contender(f"libragrad IG-{IG_STEPS}", lambda: frozen(functools.partial(
            attr.IntegratedGradients(transformed()).attribute, x, target=target, n_steps=IG_STEPS,
            internal_batch_size=x.shape[0])),
            f"libragrad_fx.attr.IntegratedGradients, {IG_STEPS} steps, {x.shape[0]} rows per pass"))
    if name.startswith(("vit", "eva02")):  # token-to-token attention maps (not windows, not mixing MLPs)
        out.append(Contender("GAE (vanilla)", lambda: functools.partial(
            attr.GAE(model, preset="vanilla").attribute, x, target=target),
            "libragrad_fx.attr.GAE(preset='vanilla'): Chefer et al.'s rollout", frozen=False))
    return out


def count_costs(entries: list[Contender], model: torch.nn.Module) -> dict[str, Any]:
    """FLOPs and saved bytes of each (built) contender's call, counted from the ops it runs."""
    from libragrad_fx.bench.cost import measure

    state = list(model.parameters()) + list(model.buffers())
    return {c.name: measure(c.run, exclude=state) for c in entries if c.counted}


# --- timing ----------------------------------------------------------------------------------

@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def timed(fn: Callable) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(entries: list[Contender], runs: int, per_entry_runs: dict[str, int] | None = None,
              log: Callable[[str], None] = print, loads: list[float] | None = None) -> dict[str, Timing]:
    """Warm each contender up once, then ``runs`` rounds, each contender once per round (the machine's
    1-minute load average after each round goes to ``loads``)."""
    per_entry_runs = per_entry_runs or {}
    out = {c.name: Timing() for c in entries}
    for c in entries:
        w, _ = timed(c.build().run)
        log(f"  warm-up {c.name}: {w:.2f} s")
    for r in range(runs):
        order = entries[r % len(entries):] + entries[:r % len(entries)]
        for c in order:
            if r >= per_entry_runs.get(c.name, runs):
                continue
            w, p = timed(c.run)
            out[c.name].wall.append(w)
            out[c.name].cpu.append(p)
        if loads is not None:
            loads.append(os.getloadavg()[0])
        log(f"  round {r + 1}/{runs}: " + ", ".join(f"{k} {v.wall[-1]:.2f}s" for k, v in out.items() if v.wall))
    return out


def ratio(timings: dict[str, Timing], name: str, base: str, attr_: str) -> float:
    """Median over rounds of this contender's time over the baseline's time in the same round."""
    mine, theirs = getattr(timings[name], attr_), getattr(timings[base], attr_)
    return statistics.median(a / b for a, b in zip(mine, theirs))


# --- memory (one contender per subprocess) ---------------------------------------------------

def memory_child(model_name: str, contender: str, batch: int, lxt: bool) -> None:
    """Build one contender in this fresh process, run it once (warm-up), then measure a second call:
    the RSS before it and its peak (the high-water mark is reset first, so setup does not count)."""
    model, x = build(model_name, batch)
    listed = lxt_contenders(model_name, model, x) if lxt else contenders(model_name, model, x,
                                                                            {"unpruned", "ig", "kernels"},
                                                                            compile_=False)
    entry = next(c for c in listed if c.name == contender).build()
    print(json.dumps(second_call_peak(entry.run)))


def measure_memory(model_name: str, contender: str, batch: int, threads: int, lxt: bool) -> dict | None:
    python = LXT_PYTHON if lxt else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--memory-child", model_name, contender, "--batch", str(batch),
           "--threads", str(threads)] + (["--lxt-child"] if lxt else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT) if not lxt else "")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  memory of {contender} failed: {done.stderr.strip().splitlines()[-1:] }")
        return None
    return json.loads(lines[-1])


# --- lxt (AttnLRP / CP-LRP): only ever imported in its own process ---------------------------

class ClassPatches:
    """Put attributes on classes/modules and take them off again (lxt's patches are class-wide)."""

    def __init__(self, patches: list[tuple[Any, str, Any]]) -> None:
        self.patches = patches
        self.saved = [(owner, name, owner.__dict__.get(name, _MISSING)) for owner, name, _ in patches]

    def __enter__(self):
        for owner, name, value in self.patches:
            setattr(owner, name, value)

    def __exit__(self, *exc):
        for owner, name, value in reversed(self.saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_MISSING = object()


def lxt_patches(variant: str) -> list[tuple[Any, str, Any]]:
    """lxt's efficient rules on timm's modules (lxt has no timm map; issues #20, #31).

    CP-LRP: GELU/SiLU by lxt's identity rule, LayerNorm with the std detached (lxt's
    ``layer_norm_forward``), attention with q and k detached (lxt's ``stop_gradient``), gated MLP
    with its gate detached. AttnLRP: the same, but attention q, k gradients / 4 and v / 2
    (lxt's ``divide_gradient``) through the full softmax, and the gated product / 2.
    """
    import timm.layers.mlp as mlp
    import timm.layers.norm as norm
    import torch.nn.functional as F
    from lxt.efficient import patches as P
    from lxt.efficient.rules import divide_gradient, identity_rule_implicit, stop_gradient

    sdpa = F.scaled_dot_product_attention

    def cp_sdpa(q, k, v, *args, **kwargs):
        return sdpa(stop_gradient(q), stop_gradient(k), v, *args, **kwargs)

    def attnlrp_sdpa(q, k, v, *args, **kwargs):
        return sdpa(divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2), *args, **kwargs)

    def glu_forward(self, x):
        x = self.fc1(x)
        x1, x2 = x.chunk(2, dim=self.chunk_dim)
        value, gate = (x1, x2) if self.gate_last else (x2, x1)
        if variant == "cp":
            x = value * self.act(stop_gradient(gate))
        else:
            x = divide_gradient(value * identity_rule_implicit(self.act, gate), 2)
        return self.drop2(self.fc2(self.norm(self.drop1(x))))

    out = []
    for act in (torch.nn.GELU, torch.nn.SiLU):
        out += [(act, "original_forward", act.forward), (act, "forward", P.non_linear_forward)]
    for ln in (torch.nn.LayerNorm, norm.LayerNorm):
        out.append((ln, "forward", P.layer_norm_forward))
    out.append((F, "scaled_dot_product_attention", cp_sdpa if variant == "cp" else attnlrp_sdpa))
    out.append((mlp.GluMlp, "forward", glu_forward))
    return out


LXT_BASE = "vanilla IxG (lxt process)"


def lxt_contenders(name: str, model: torch.nn.Module, x: torch.Tensor) -> list[Contender]:
    def patched(variant: str) -> Callable[[], Callable]:
        def make():
            patches = ClassPatches(lxt_patches(variant))

            def run():
                with patches:
                    return input_x_gradient(model, x)
            return run
        return make

    lxt = dict(frozen=False, baseline=LXT_BASE, counted=False)
    out = [Contender(LXT_BASE, lambda: functools.partial(input_x_gradient, model, x), "no patches", **lxt)]
    if not name.startswith("mixer"):
        out.append(Contender("lxt CP-LRP IxG", patched("cp"), "lxt's rules on timm (q, k detached after the qkv "
                                                             "projection)", **lxt))
    out.append(Contender("lxt AttnLRP IxG", patched("attnlrp"), "lxt's rules on timm", **lxt))
    return out


def lxt_child(models: list[str], batch: int, runs: int) -> None:
    """Time lxt against vanilla in this (lxt) process; also torchvision's ViT-B, lxt's own target."""
    rows = []
    for name in models:
        model, x = build(name, batch)
        entries = lxt_contenders(name, model, x)
        print(f"[lxt] {name}", file=sys.stderr)
        timings = alternate(entries, runs, log=lambda s: print(s, file=sys.stderr))
        rows += _rows(name, entries, timings)
    if "vit_base_patch16_224" in models:
        import torchvision
        from lxt.efficient import monkey_patch  # noqa: F401  (the documented entry point; we patch reversibly)
        from lxt.efficient.models.vit_torch import cp_LRP

        torch.manual_seed(0)
        model = torchvision.models.vit_b_16().eval()
        x = build("vit_base_patch16_224", batch)[1]
        patches = []
        for target, patch in cp_LRP.items():  # what monkey_patch(vision_transformer, cp_LRP) would set
            fn = patch.args[0]
            if patch.keywords.get("keep_original"):
                patches.append((target, "original_forward", target.forward))
            patches.append((target, "forward", fn))
        context = ClassPatches(patches)

        def lxt_run():
            with context:
                return input_x_gradient(model, x)
        lxt = dict(frozen=False, baseline=LXT_BASE, counted=False)
        entries = [Contender(LXT_BASE, lambda: functools.partial(input_x_gradient, model, x), "torchvision's ViT-B/16",
                             **lxt),
                   Contender("lxt CP-LRP IxG", lambda: lxt_run, "lxt's own cp_LRP map for torchvision's ViT", **lxt)]
        print("[lxt] torchvision vit_b_16", file=sys.stderr)
        timings = alternate(entries, runs, log=lambda s: print(s, file=sys.stderr))
        rows += _rows("torchvision_vit_b_16", entries, timings)
    print(json.dumps(rows))


def _rows(model: str, entries: list[Contender], timings: dict[str, Timing], costs: dict | None = None) -> list[dict]:
    rows = []
    costs = costs or {}
    for c in entries:
        t = timings[c.name]
        if not t.wall:
            continue
        base = c.base
        row = {"model": model, "contender": c.name, "parameters": c.setting, "baseline": base, "runs": len(t.wall),
               "wall_s": statistics.median(t.wall), "cpu_s": statistics.median(t.cpu), "min_cpu_s": min(t.cpu),
               "ratio_wall": ratio(timings, c.name, base, "wall"),
               "ratio_cpu": ratio(timings, c.name, base, "cpu"),
               "ratio_min_cpu": min(t.cpu) / min(timings[base].cpu), "note": c.note}
        if c.name == VANILLA[True] and VANILLA[False] in timings:  # what freezing alone changes
            row["freeze_ratio_cpu"] = ratio(timings, c.name, VANILLA[False], "cpu")
            if c.name in costs and VANILLA[False] in costs:
                row["freeze_ratio_saved"] = costs[c.name].saved_bytes / costs[VANILLA[False]].saved_bytes
        mine, theirs = costs.get(c.name), costs.get(base)
        if mine is not None:
            row.update(gflops_forward=mine.forward_flops / 1e9, gflops_backward=mine.backward_flops / 1e9,
                       saved_mib=mine.saved_bytes / 2 ** 20, other_melements=mine.other_elements / 1e6)
            if theirs is not None:
                row.update(flop_ratio=mine.flops / theirs.flops, saved_ratio=mine.saved_bytes / theirs.saved_bytes,
                           other_ratio=mine.other_elements / theirs.other_elements)
        rows.append(row)
    return rows


# --- transform() and torch.compile -------------------------------------------------------------

def transform_times(model: torch.nn.Module, x: torch.Tensor, runs: int) -> list[dict]:
    import libragrad_fx as lf

    cases = {
        "transform(model)  [fx, no example: no forward check, projections not pruned]":
            lambda: lf.transform(model, capture="fx"),
        "transform(model, x[:1], verify=False)  [fx]": lambda: lf.transform(model, x[:1], capture="fx", verify=False),
        "transform(model, x[:1])  [fx, with the forward check: two forwards]":
            lambda: lf.transform(model, x[:1], capture="fx"),
    }
    rows = []
    for label, fn in cases.items():
        fn()
        walls = [timed(fn)[0] for _ in range(runs)]
        rows.append({"case": label, "runs": runs, "wall_s": statistics.median(walls), "min_s": min(walls)})
    return rows


def compile_report(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Graph breaks and compile time of the transformed model under torch.compile."""
    import torch._dynamo as dynamo

    import libragrad_fx as lf
    from libragrad_fx.core.frozen import frozen_parameters

    gm = lf.transform(model, x[:1])
    with frozen_parameters(model):
        explained = dynamo.explain(gm)(x)
        dynamo.reset()
        compiled = torch.compile(gm, fullgraph=True)
        start = time.perf_counter()
        got = input_x_gradient(compiled, x)
        first = time.perf_counter() - start
        eager = input_x_gradient(gm, x)
        with torch.no_grad():
            out_diff = float((compiled(x) - gm(x)).abs().max())
    return {"graphs": explained.graph_count, "graph_breaks": explained.graph_break_count,
            "break_reasons": [str(r.reason) for r in explained.break_reasons],
            "first_call_s (compile + run)": first,
            "max |forward compiled - eager|": out_diff,
            "rel. difference of IxG": float((got - eager).norm() / eager.norm())}


# --- the driver ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--ig-runs", type=int, default=5, help="rounds that include IG (it costs 32 IxGs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="local")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument("--compile-models", nargs="*", default=["vit_base_patch16_224"])
    parser.add_argument("--skip", nargs="*", default=[], choices=["memory", "lxt", "ig", "transform", "unpruned", "cost", "kernels"],
                        help="parts to leave out (kernels: the contenders with the optional fused rule kernels, "
                             "which need a C++ compiler)")
    parser.add_argument("--only", nargs="+", metavar="CONTENDER",
                        help="time only these contenders (names as in the table; their baselines are kept)")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "CONTENDER"), help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true",
                        help="keep the models an interrupted run of the same --tag finished (speed-<tag>.partial.json)")
    parser.add_argument("--lxt-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args.batch, args.lxt_child)
        return
    if args.lxt_child:
        lxt_child(args.models, args.batch, args.runs)
        return

    wanted = {"unpruned", "ig", "kernels"} - set(args.skip)
    rows: list[dict] = []
    extra: dict[str, Any] = {"tag": args.tag, "batch": args.batch, "runs": args.runs, "threads": args.threads,
                             "torch": torch.__version__, "transform": {}, "compile": {}, "load": {}}
    partial = args.out / f"speed-{args.tag}.partial.json"
    if args.resume and partial.exists():  # models finished by an interrupted run of the same tag
        done = json.loads(partial.read_text())
        if (done["batch"], done["runs"], done["threads"]) != (args.batch, args.runs, args.threads):
            sys.exit(f"{partial} was run with another --batch/--runs/--threads; resume with the same ones")
        rows, extra = done.pop("rows"), done
        print(f"resuming {partial}: {sorted({r['model'] for r in rows})} done")
    for name in args.models:
        if any(r["model"] == name for r in rows):
            continue
        print(f"[{name}] batch {args.batch}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
        model, x = build(name, args.batch)
        entries = contenders(name, model, x, wanted, compile_=name in args.compile_models)
        if args.only:
            unknown = sorted(set(args.only) - {c.name for c in entries})
            if unknown:
                sys.exit(f"--only: {name} has no contender {unknown}; it has {[c.name for c in entries]}")
            keep = set(args.only) | {c.base for c in entries if c.name in args.only}
            entries = [c for c in entries if c.name in keep]
        ig_runs = {c.name: args.ig_runs for c in entries if c.name.startswith("libragrad IG")}
        loads: list[float] = []
        timings = alternate(entries, args.runs, ig_runs, loads=loads)
        extra["load"][name] = statistics.mean(loads)
        costs = count_costs(entries, model) if "cost" not in args.skip else {}
        model_rows = _rows(name, entries, timings, costs)
        if "memory" not in args.skip:
            for row in model_rows:
                if "compiled" in row["contender"]:
                    row["note"] += "; memory not measured (compilation dominates the peak)"
                    continue
                mem = measure_memory(name, row["contender"], args.batch, args.threads, lxt=False)
                if mem:
                    row.update(peak_mb=mem["peak_mb"], extra_mb=mem["peak_mb"] - mem["before_mb"])
        rows += model_rows
        if "transform" not in args.skip:
            extra["transform"][name] = transform_times(model, x, args.runs)
        if name in args.compile_models:
            extra["compile"][name] = compile_report(model, x)
            print(f"  compile: {extra['compile'][name]}")
        args.out.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"rows": rows, **extra}, default=str))
    if "lxt" not in args.skip:
        rows += run_lxt(args)
    write(args, rows, extra)
    partial.unlink(missing_ok=True)


def run_lxt(args) -> list[dict]:
    if not Path(LXT_PYTHON).exists():
        print(f"lxt skipped: no interpreter at {LXT_PYTHON} (set LXT_PYTHON)")
        return []
    cmd = [LXT_PYTHON, str(Path(__file__).resolve()), "--lxt-child", "--models", *args.models,
           "--batch", str(args.batch), "--runs", str(args.runs), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=""))
    sys.stdout.write(done.stderr)
    if done.returncode != 0:
        print("lxt failed:", done.stderr.strip().splitlines()[-1:])
        return []
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    if "memory" not in args.skip:
        for row in rows:
            if row["model"].startswith("torchvision"):
                continue
            mem = measure_memory(row["model"], row["contender"], args.batch, args.threads, lxt=True)
            if mem:
                row.update(peak_mb=mem["peak_mb"], extra_mb=mem["peak_mb"] - mem["before_mb"])
    return rows


def write(args, rows: list[dict], extra: dict) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"speed-{args.tag}"
    fields = ["model", "contender", "parameters", "baseline", "runs", "wall_s", "cpu_s", "min_cpu_s", "ratio_wall",
              "ratio_cpu", "ratio_min_cpu", "flop_ratio", "gflops_forward", "gflops_backward", "other_melements",
              "other_ratio", "saved_mib", "saved_ratio", "peak_mb", "extra_mb", "mem_ratio_extra", "mem_ratio_peak",
              "note"]
    for row in rows:  # memory ratios against the row's own baseline (same model, setting and process kind)
        ref = next((r for r in rows if r["model"] == row["model"] and r["contender"] == row["baseline"]), None)
        if ref and ref.get("extra_mb") and row.get("extra_mb") is not None:
            row["mem_ratio_extra"] = row["extra_mb"] / ref["extra_mb"]
            row["mem_ratio_peak"] = row["peak_mb"] / ref["peak_mb"]
    with open(base.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    load = extra.get("load", {})
    lines = [f"# Explanation cost, run `{args.tag}`", "",
             f"torch {extra['torch']}, batch {args.batch}, {args.threads} thread(s), contenders alternating, "
             "`runs` rounds after one warm-up each. Every ratio is like for like: against vanilla IxG in the same "
             "parameter setting (`parameters`: frozen for the call, or left requiring grad; lxt rows: against "
             "vanilla IxG in the lxt process). Times are medians; `ratio (CPU)` is the median of per-round CPU-time "
             "ratios, `min ratio` the ratio of the minimum CPU times (the least disturbed rounds). `FLOP ratio`: "
             "the ratio the FLOP count predicts (matrix-product FLOPs of forward + backward, counted from the ops "
             "each contender runs; elementwise ops, norms and softmax are not counted). `saved`: bytes autograd "
             "keeps for the backward (unique storages, parameters and buffers excluded). Memory: each contender "
             "alone in a fresh process, second call; extra = peak RSS of that call - RSS before it.", "",
             f"Machine load while timing (mean 1-minute load average over the rounds, {os.cpu_count()} cores): "
             f"{_load_text(load)}.", "",
             "| model | contender | parameters | runs | CPU s | ratio (CPU) | FLOP ratio | min ratio (CPU) | "
             "ratio (wall) | saved MiB | saved ratio | peak MB | extra ratio | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['contender']} | {r['parameters']} | {r['runs']} | {r['cpu_s']:.2f} | "
                     f"{r['ratio_cpu']:.3f} | {_fmt(r.get('flop_ratio'), 3)} | {r['ratio_min_cpu']:.3f} | "
                     f"{r['ratio_wall']:.3f} | {_fmt(r.get('saved_mib'), 0)} | {_fmt(r.get('saved_ratio'), 3)} | "
                     f"{_fmt(r.get('peak_mb'), 0)} | {_fmt(r.get('mem_ratio_extra'), 3)} | {r['note']} |")
    freeze = [r for r in rows if r.get("freeze_ratio_cpu") is not None]
    if freeze:
        lines += ["", "## What freezing the parameters changes (vanilla IxG, frozen / requiring grad)", "",
                  "| model | ratio (CPU) | saved bytes ratio |", "|---|---|---|"]
        lines += [f"| {r['model']} | {r['freeze_ratio_cpu']:.3f} | {_fmt(r.get('freeze_ratio_saved'), 3)} |"
                  for r in freeze]
    for name, cases in extra["transform"].items():
        lines += ["", f"## transform() time, {name}", "", "| case | median s | min s |", "|---|---|---|"]
        lines += [f"| {c['case']} | {c['wall_s']:.3f} | {c['min_s']:.3f} |" for c in cases]
    for name, report in extra["compile"].items():
        lines += ["", f"## torch.compile, {name}", ""] + [f"- {k}: {v}" for k, v in report.items()]
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")
    (args.out / f"speed-{args.tag}.json").write_text(json.dumps({"rows": rows, **extra}, indent=1, default=str))
    print("\n".join(lines))
    print(f"\nwrote {base}.csv, .md, .json")


def _load_text(load: dict) -> str:
    if not load:
        return "not recorded"
    return ", ".join(f"{name} {value:.1f}" for name, value in load.items())


def _fmt(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
