"""What FullGrad costs next to Input x Gradient, on the same transformed model.

FullGrad is Input x Gradient plus every bias's share <grad~_y f, b>, each reduced onto its site's
token/pixel grid. Both come from one forward and one backward; the question is what the bias
shares add. For each model (timm, random weights, eval mode) this script transforms once
(``libragrad``) and measures, with parameters frozen for every contender (what attribution needs):

* time: every contender in one process, alternating round by round (the first one rotates),
  after one warm-up call each; CPU time (``time.process_time``) and wall time of one explanation
  batch. Reported: medians, and the median of the per-round ratios to Input x Gradient.
* bytes autograd saves for the backward: one call under ``torch.autograd.graph.saved_tensors_hooks``,
  unique storages (a storage saved twice counts once), parameters included (both contenders save
  the same weights), and the bytes FullGrad's hooks hold until the backward reaches their site
  (the biases that are not the model's own tensors, e.g. a class token placed in a [B, N, D] zero
  tensor); deterministic, unlike the peak;
* peak memory: each contender alone in a fresh process, second call, peak RSS of that call minus
  the RSS before it (``extra``), and the peak RSS itself.

    python tools/bench_fullgrad.py --tag vitb                        # ViT-B/16, batch 8
    python tools/bench_fullgrad.py --models vit_small_patch16_224 mixer_b16_224 --runs 5 --tag others

Writes ``docs/bench/fullgrad-cost-TAG.md`` and ``.json`` (docs/bench/fullgrad-cost.md reads them).
One thread per process by default: CPU-time ratios stay meaningful on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_rss import second_call_peak  # noqa: E402  (tools/, beside this script)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vit_base_patch16_224",)
TARGET = 1
CONTENDERS = ("IxG", "FullGrad map", "FullGrad totals")


def build(name: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model with random weights (no download), eval mode, and a fixed random batch."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return model, torch.randn(batch, *size, generator=torch.Generator().manual_seed(1))


def contenders(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """Each contender's explanation call, on one transformed model, parameters frozen for the call."""
    import libragrad_fx as lf

    gm = lf.transform(model, x[:1])
    target = [TARGET] * x.shape[0]
    ixg, fullgrad = lf.attr.InputXGradient(gm), lf.attr.FullGrad(gm)
    calls = {"IxG": lambda: ixg.attribute(x, target=target),
             "FullGrad map": lambda: fullgrad.attribute(x, target=target),
             "FullGrad totals": lambda: fullgrad.decompose(x, target=target)}

    def frozen(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with lf.frozen_parameters(model):
                return call()
        return run
    return {name: frozen(call) for name, call in calls.items()}


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(calls: dict[str, Callable[[], Any]], runs: int) -> dict[str, dict[str, list[float]]]:
    """Warm each contender up once, then ``runs`` rounds with each contender once per round."""
    names = list(calls)
    out = {n: {"wall": [], "cpu": []} for n in names}
    for name in names:
        print(f"  warm-up {name}: {timed(calls[name])[0]:.2f} s", flush=True)
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = timed(calls[name])
            out[name]["wall"].append(wall)
            out[name]["cpu"].append(cpu)
        print(f"  round {r + 1}/{runs}: " + ", ".join(f"{n} {out[n]['cpu'][-1]:.2f}s" for n in names), flush=True)
    return out


def held_bytes(call: Callable[[], Any], model: torch.nn.Module) -> tuple[int, int]:
    """(bytes of the unique storages autograd saves for the backward during one call, bytes of the
    storages FullGrad's hooks hold until the backward reaches their site and autograd does not save:
    the biases that are not the model's own parameters or buffers)."""
    from libragrad_fx.attr import fullgrad

    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}
    held: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    watch = fullgrad._BiasShares.watch

    def watching(self, name: str, value: torch.Tensor, bias: torch.Tensor) -> None:
        storage = bias.untyped_storage()
        if storage.data_ptr() not in own:
            held[storage.data_ptr()] = storage.nbytes()
        watch(self, name, value, bias)

    fullgrad._BiasShares.watch = watching
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            call()
    finally:
        fullgrad._BiasShares.watch = watch
    return sum(saved.values()), sum(n for ptr, n in held.items() if ptr not in saved)


def memory_child(name: str, contender: str, batch: int) -> None:
    """In a fresh process: build, call once, then measure a second call's peak RSS over the RSS before it."""
    model, x = build(name, batch)
    print(json.dumps(second_call_peak(contenders(model, x)[contender])))


def peak_memory(name: str, contender: str, batch: int, threads: int) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name, contender, "--batch", str(batch),
           "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  peak memory of {contender} failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(lines[-1])


def measure(name: str, args: argparse.Namespace) -> list[dict]:
    print(f"[{name}] batch {args.batch}, {args.threads} thread(s)", flush=True)
    model, x = build(name, args.batch)
    calls = contenders(model, x)
    times = alternate(calls, args.runs) if args.runs else None
    rows = []
    for contender, call in calls.items():
        saved, held = held_bytes(call, model)
        row = {"model": name, "contender": contender, "runs": args.runs, "saved_mb": saved / 2 ** 20,
               "held_mb": held / 2 ** 20}
        if times is not None:
            t, base = times[contender], times["IxG"]
            row.update(cpu_s=statistics.median(t["cpu"]), wall_s=statistics.median(t["wall"]),
                       ratio_cpu=statistics.median(a / b for a, b in zip(t["cpu"], base["cpu"])),
                       ratio_wall=statistics.median(a / b for a, b in zip(t["wall"], base["wall"])),
                       min_ratio_cpu=min(t["cpu"]) / min(base["cpu"]))
        if not args.skip_peak:
            peak = peak_memory(name, contender, args.batch, args.threads)
            if peak:
                row.update(peak_mb=peak["peak_mb"], extra_mb=peak["peak_mb"] - peak["before_mb"])
        rows.append(row)
    ixg = rows[0]
    for row in rows:
        row["ratio_saved"] = row["saved_mb"] / ixg["saved_mb"]
        row["ratio_held"] = (row["saved_mb"] + row["held_mb"]) / ixg["saved_mb"]
        if "extra_mb" in row and "extra_mb" in ixg:
            row["ratio_extra"] = row["extra_mb"] / ixg["extra_mb"]
            row["ratio_peak"] = row["peak_mb"] / ixg["peak_mb"]
    return rows


def write(args: argparse.Namespace, rows: list[dict], seconds: float) -> None:
    def fmt(row: dict, key: str, digits: int) -> str:
        return f"{row[key]:.{digits}f}" if key in row else ""

    load = os.getloadavg()
    lines = [f"# FullGrad against Input x Gradient, run `{args.tag}`", "",
             f"torch {torch.__version__}, batch {args.batch}, {args.threads} thread(s), {args.runs} rounds, "
             f"parameters frozen for every contender, libragrad preset. Load average at the end "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min); {seconds / 60:.1f} min in all. "
             "saved: what autograd saves for the backward; held: what FullGrad's hooks hold besides (biases "
             "that are not the model's own tensors); memory ratio: (saved + held) / IxG's saved.", "",
             "| model | contender | CPU s | ratio (CPU) | min ratio (CPU) | wall s | saved MB | held MB | "
             "memory ratio | extra MB | extra ratio | peak MB | peak ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['contender']} | {fmt(r, 'cpu_s', 2)} | {fmt(r, 'ratio_cpu', 3)} | "
                     f"{fmt(r, 'min_ratio_cpu', 3)} | {fmt(r, 'wall_s', 2)} | {r['saved_mb']:.0f} | "
                     f"{r['held_mb']:.1f} | {r['ratio_held']:.3f} | {fmt(r, 'extra_mb', 0)} | "
                     f"{fmt(r, 'ratio_extra', 3)} | {fmt(r, 'peak_mb', 0)} | {fmt(r, 'ratio_peak', 3)} |")
    stem = f"fullgrad-cost-{args.tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "memory_child")}
    (args.out / f"{stem}.json").write_text(json.dumps({"args": settings, "load": load, "seconds": seconds,
                                                        "rows": rows}, indent=1))
    print("\n".join(lines))
    print(f"\nwrote {args.out / stem}.md, .json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=7, help="timing rounds (0: bytes only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="local")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument("--skip-peak", action="store_true", help="no peak-RSS subprocesses")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "CONTENDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args.batch)
        return
    start = time.perf_counter()
    rows = [row for name in args.models for row in measure(name, args)]
    write(args, rows, time.perf_counter() - start)


if __name__ == "__main__":
    main()
