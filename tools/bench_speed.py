"""What an explanation costs: LibraGrad and its peers against vanilla Input x Gradient.

For each model, one process times every contender on the same batch, alternating them round by
round (the first contender rotates), after one warm-up call each: the time of forward + backward
for one explanation batch (gradients for the input only, ``torch.autograd.grad(f, x)``), as wall
time and as this process's CPU time. Reported: medians over the rounds, and the median of the
per-round ratios to vanilla IxG (ratios from the same round, so machine load cancels as far as it
can). Peak memory is measured with each contender alone in a fresh subprocess (max RSS, and max
RSS minus the RSS before the explanation). AttnLRP / CP-LRP run in the lxt environment, in their
own process, because lxt patches torch classes process-wide; there they are timed against a
vanilla IxG of that same process (lxt's class patches are put on and taken off between calls).

    python tools/bench_speed.py --tag run1            # the README table: four models, batch 8
    python tools/bench_speed.py --models vit_small_patch16_224 --runs 5 --skip memory lxt

Writes ``docs/bench/speed-<tag>.csv`` and ``.md``. Threads default to 1: the benchmark machine has
two cores shared with other jobs, and one thread per process keeps CPU time meaningful.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import functools
import gc
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

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vit_small_patch16_224", "vit_base_patch16_224", "eva02_small_patch14_224", "mixer_b16_224")
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

@dataclass
class Contender:
    name: str
    make: Callable[[], Callable[[], Any]]
    """Builds the contender (transform, compile, method objects) and returns its explanation call."""
    note: str = ""
    run: Callable[[], Any] | None = None

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

    def compiled():
        with frozen_parameters(model):
            return torch.compile(transformed(), fullgraph=True)

    out = [
        Contender("vanilla IxG", ixg(lambda: model, False), "parameters require grad (as users run it)"),
        Contender("vanilla IxG, frozen", ixg(lambda: model, True), "parameters frozen for the call"),
        Contender("libragrad IxG", ixg(transformed, False), "parameters require grad"),
        Contender("libragrad IxG, frozen", ixg(transformed, True),
                  "frozen_parameters(): what attribution methods should run"),
    ]
    if "unpruned" in wanted:
        out.append(Contender("libragrad IxG, unpruned", ixg(lambda: lf.transform(model, example, prune=False), True),
                             "transform(prune=False), parameters frozen"))
    if compile_:
        out.append(Contender("libragrad IxG, compiled", ixg(compiled, True),
                             "torch.compile(fullgraph=True), parameters frozen"))
    try:
        from libragrad_fx import attr
    except ImportError:
        return out
    target = [TARGET] * x.shape[0]
    out.append(Contender("libragrad FullGrad",
                         lambda: frozen(functools.partial(attr.FullGrad(transformed()).attribute, x, target=target)),
                         "libragrad_fx.attr.FullGrad, parameters frozen"))
    if "ig" in wanted:
        out.append(Contender(f"libragrad IG-{IG_STEPS}", lambda: frozen(functools.partial(
            attr.IntegratedGradients(transformed()).attribute, x, target=target, n_steps=IG_STEPS,
            internal_batch_size=x.shape[0])),
            f"libragrad_fx.attr.IntegratedGradients, {IG_STEPS} steps, {x.shape[0]} rows per pass, frozen"))
    if not name.startswith("mixer"):
        out.append(Contender("GAE (vanilla)", lambda: functools.partial(
            attr.GAE(model, preset="vanilla").attribute, x, target=target),
            "libragrad_fx.attr.GAE(preset='vanilla'): Chefer et al.'s rollout, parameters require grad"))
    return out


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
              log: Callable[[str], None] = print) -> dict[str, Timing]:
    """Warm each contender up once, then ``runs`` rounds, each contender once per round."""
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
        log(f"  round {r + 1}/{runs}: " + ", ".join(f"{k} {v.wall[-1]:.2f}s" for k, v in out.items() if v.wall))
    return out


def ratio(timings: dict[str, Timing], name: str, base: str, attr_: str) -> float:
    """Median over rounds of this contender's time over the baseline's time in the same round."""
    mine, theirs = getattr(timings[name], attr_), getattr(timings[base], attr_)
    return statistics.median(a / b for a, b in zip(mine, theirs))


# --- memory (one contender per subprocess) ---------------------------------------------------

def _status_mb(field_: str) -> float:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field_ + ":"))
    return int(line.split()[1]) / 1024


def memory_child(model_name: str, contender: str, batch: int, lxt: bool) -> None:
    """Build one contender in this fresh process, run it once (warm-up), then measure a second call:
    the RSS before it and its peak (the high-water mark is reset first, so setup does not count)."""
    model, x = build(model_name, batch)
    listed = lxt_contenders(model_name, model, x) if lxt else contenders(model_name, model, x, {"unpruned", "ig"},
                                                                            compile_=False)
    entry = next(c for c in listed if c.name == contender).build()
    entry.run()
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed setup memory back, so "before" is honest
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = _status_mb("VmRSS")
    entry.run()
    print(json.dumps({"before_mb": before, "peak_mb": _status_mb("VmHWM")}))


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


def lxt_contenders(name: str, model: torch.nn.Module, x: torch.Tensor) -> list[Contender]:
    def patched(variant: str) -> Callable[[], Callable]:
        def make():
            patches = ClassPatches(lxt_patches(variant))

            def run():
                with patches:
                    return input_x_gradient(model, x)
            return run
        return make

    out = [Contender("vanilla IxG (lxt process)", lambda: functools.partial(input_x_gradient, model, x),
                     "no patches, parameters require grad")]
    if not name.startswith("mixer"):
        out.append(Contender("lxt CP-LRP IxG", patched("cp"), "lxt's rules on timm (q, k detached after the qkv "
                                                             "projection), parameters require grad"))
    out.append(Contender("lxt AttnLRP IxG", patched("attnlrp"), "lxt's rules on timm, parameters require grad"))
    return out


def lxt_child(models: list[str], batch: int, runs: int) -> None:
    """Time lxt against vanilla in this (lxt) process; also torchvision's ViT-B, lxt's own target."""
    rows = []
    for name in models:
        model, x = build(name, batch)
        entries = lxt_contenders(name, model, x)
        print(f"[lxt] {name}", file=sys.stderr)
        timings = alternate(entries, runs, log=lambda s: print(s, file=sys.stderr))
        rows += _rows(name, entries, timings, "vanilla IxG (lxt process)")
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
        entries = [Contender("vanilla IxG (lxt process)", lambda: functools.partial(input_x_gradient, model, x),
                             "torchvision's ViT-B/16"),
                   Contender("lxt CP-LRP IxG", lambda: lxt_run, "lxt's own cp_LRP map for torchvision's ViT")]
        print("[lxt] torchvision vit_b_16", file=sys.stderr)
        timings = alternate(entries, runs, log=lambda s: print(s, file=sys.stderr))
        rows += _rows("torchvision_vit_b_16", entries, timings, "vanilla IxG (lxt process)")
    print(json.dumps(rows))


def _rows(model: str, entries: list[Contender], timings: dict[str, Timing], base: str) -> list[dict]:
    rows = []
    for c in entries:
        t = timings[c.name]
        if not t.wall:
            continue
        rows.append({"model": model, "contender": c.name, "runs": len(t.wall),
                     "wall_s": statistics.median(t.wall), "cpu_s": statistics.median(t.cpu), "min_cpu_s": min(t.cpu),
                     "ratio_wall": ratio(timings, c.name, base, "wall"),
                     "ratio_cpu": ratio(timings, c.name, base, "cpu"),
                     "ratio_min_cpu": min(t.cpu) / min(timings[base].cpu), "note": c.note})
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
    parser.add_argument("--skip", nargs="*", default=[], choices=["memory", "lxt", "ig", "transform", "unpruned"])
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "CONTENDER"), help=argparse.SUPPRESS)
    parser.add_argument("--lxt-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args.batch, args.lxt_child)
        return
    if args.lxt_child:
        lxt_child(args.models, args.batch, args.runs)
        return

    wanted = {"unpruned", "ig"} - set(args.skip)
    rows: list[dict] = []
    extra: dict[str, Any] = {"tag": args.tag, "batch": args.batch, "runs": args.runs, "threads": args.threads,
                             "torch": torch.__version__, "transform": {}, "compile": {}}
    for name in args.models:
        print(f"[{name}] batch {args.batch}, {args.threads} thread(s)")
        model, x = build(name, args.batch)
        entries = contenders(name, model, x, wanted, compile_=name in args.compile_models)
        ig_runs = {c.name: args.ig_runs for c in entries if c.name.startswith("libragrad IG")}
        timings = alternate(entries, args.runs, ig_runs)
        model_rows = _rows(name, entries, timings, "vanilla IxG")
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
    if "lxt" not in args.skip:
        rows += run_lxt(args)
    write(args, rows, extra)


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
    fields = ["model", "contender", "runs", "wall_s", "cpu_s", "min_cpu_s", "ratio_wall", "ratio_cpu", "ratio_min_cpu",
              "peak_mb", "extra_mb", "mem_ratio_extra", "mem_ratio_peak", "note"]
    for row in rows:  # memory ratios against the vanilla IxG of the same model and process kind
        base_name = "vanilla IxG (lxt process)" if "(lxt" in row["contender"] or row["contender"].startswith(
            "lxt") else "vanilla IxG"
        ref = next((r for r in rows if r["model"] == row["model"] and r["contender"] == base_name), None)
        if ref and ref.get("extra_mb") and row.get("extra_mb") is not None:
            row["mem_ratio_extra"] = row["extra_mb"] / ref["extra_mb"]
            row["mem_ratio_peak"] = row["peak_mb"] / ref["peak_mb"]
    with open(base.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Explanation cost, run `{args.tag}`", "",
             f"torch {extra['torch']}, batch {args.batch}, {args.threads} thread(s), contenders alternating, "
             "`runs` rounds after one warm-up each. Times are medians; ratios are medians of per-round ratios "
             "against vanilla IxG (lxt rows: against vanilla IxG in the lxt process); `min ratio` is the ratio of "
             "the minimum CPU times (the least disturbed rounds). Memory: each contender alone in a fresh "
             "process, second call; extra = peak RSS of that call - RSS before it.", "",
             "| model | contender | runs | wall s | CPU s | ratio (wall) | ratio (CPU) | min ratio (CPU) | peak MB | "
             "extra MB | extra ratio | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['contender']} | {r['runs']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{r['ratio_wall']:.3f} | {r['ratio_cpu']:.3f} | {r['ratio_min_cpu']:.3f} | "
                     f"{_fmt(r.get('peak_mb'), 0)} | {_fmt(r.get('extra_mb'), 0)} | "
                     f"{_fmt(r.get('mem_ratio_extra'), 3)} | {r['note']} |")
    for name, cases in extra["transform"].items():
        lines += ["", f"## transform() time, {name}", "", "| case | median s | min s |", "|---|---|---|"]
        lines += [f"| {c['case']} | {c['wall_s']:.3f} | {c['min_s']:.3f} |" for c in cases]
    for name, report in extra["compile"].items():
        lines += ["", f"## torch.compile, {name}", ""] + [f"- {k}: {v}" for k, v in report.items()]
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")
    (args.out / f"speed-{args.tag}.json").write_text(json.dumps({"rows": rows, **extra}, indent=1, default=str))
    print("\n".join(lines))
    print(f"\nwrote {base}.csv, .md, .json")


def _fmt(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
