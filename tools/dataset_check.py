"""Explaining a whole folder of images, checked end to end and timed (docs/dataset.md).

On a folder of generated PNGs (``libragrad_fx.bench.folder``, with masks), each step a real command line:

* ``attribute`` with 1 process (1 and 2 torch threads) and with 2 processes (``torchrun
  --nproc-per-node 2``, gloo, 1 thread each); the 2-process output must equal the 1-process one
  byte for byte (same threads per process);
* a run killed (SIGKILL) after a third of its shards, restarted with the same command: it must end
  with the same bytes as the uninterrupted run;
* ``bench --data`` with 1 and 2 processes (equal per-sample scores and shards);
* peak memory of ``attribute`` on a tenth of the folder and on all of it (it streams: about equal).

Every command runs in its own folder with a relative ``--out``, so even the manifests compare equal.
Per step: wall time, CPU time of the processes (user + system), samples/s, peak RSS of the largest
process. Results go to ``WORK/results.json`` (a finished step is not run again: the check resumes)
and a markdown table on stdout.

    nice -n 19 python tools/dataset_check.py --n 3000 --work /tmp/dataset-check
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# runs the command and records its processes' CPU time and the largest one's peak RSS
_WRAP = ("import json, os, resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
         "u = resource.getrusage(resource.RUSAGE_CHILDREN); json.dump({'cpu_s': u.ru_utime + u.ru_stime, "
         "'peak_rss_mb': u.ru_maxrss / 1024}, open(os.environ['USAGE_FILE'], 'w')); sys.exit(code)")


def run(command: list[str], cwd: Path, kill_after: int | None = None) -> dict:
    """Run ``python -m ...`` in ``cwd``; with ``kill_after``, SIGKILL it once that many shards exist."""
    cwd.mkdir(parents=True, exist_ok=True)
    usage = cwd / "usage.json"
    usage.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", USAGE_FILE=str(usage))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _WRAP, sys.executable, *command], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if kill_after is not None:
        shards = cwd / "out" / "shards"
        while proc.poll() is None and len(list(shards.glob("*.safetensors"))) < kill_after:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: torchrun's ranks or the DataLoader workers too
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if kill_after is None and proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{err[-3000:]}")
    measured = json.loads(usage.read_text()) if usage.is_file() else {"cpu_s": None, "peak_rss_mb": None}
    lines = out.strip().splitlines()
    samples = next((int(line.split()[1]) for line in lines if " samples this run " in line), None)
    return {"command": " ".join(["python", *command]), "returncode": proc.returncode, "wall_s": round(seconds, 1),
            "cpu_s": measured["cpu_s"] and round(measured["cpu_s"], 1),
            "peak_rss_mb": measured["peak_rss_mb"] and round(measured["peak_rss_mb"]), "samples": samples,
            "stdout": lines[-6:]}


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def same(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> str:
    """Whether two output folders hold the same bytes (``results.csv`` compared without its timing column)."""
    fa, fb = files(a), files(b)
    if fa.keys() != fb.keys():
        return f"different files: {sorted(set(fa) ^ set(fb))[:5]}"
    for name in ("results.csv",):
        if name in fa:
            fa[name], fb[name] = _untimed(fa[name]), _untimed(fb[name])
    bad = [k for k in fa if fa[k] != fb[k] and k not in ignore]
    return f"identical ({len(fa)} files)" if not bad else f"{len(bad)} files differ, e.g. {bad[:3]}"


def _untimed(text: bytes) -> bytes:
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(text.decode())))
    return json.dumps([{k: v for k, v in r.items() if k != "ms_per_target"} for r in rows]).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="images (default 3000)")
    parser.add_argument("--model", default="vit", help="a bundled model (default vit)")
    parser.add_argument("--method", default="fullgrad", help="attribute's method (default fullgrad)")
    parser.add_argument("--bench-methods", default="ixg,fullgrad", help="bench --data methods (default ixg,fullgrad)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dataset-check"))
    args = parser.parse_args()
    work = args.work.resolve()
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    data, masks = work / "images", work / "masks"
    if not (work / "images.done").exists():
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(masks, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "libragrad_fx.bench.folder", str(data), "--n", str(args.n), "--masks",
                        str(masks)], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        (work / "images.done").touch()

    common = ["--data", str(data), "--out", "out", "--shard-size", "64", "--batch-size", "32", "--workers", "1",
              "--no-progress"]
    attribute = ["-m", "libragrad_fx", "attribute", args.model, "--method", args.method, *common]
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    bench = ["-m", "libragrad_fx", "bench", "--model", args.model, "--data", str(data), "--masks", str(masks),
             "--mask-values", "class", "--methods", args.bench_methods, "--limit", str(args.n), "--out", "out",
             "--shard-size", "64", "--batch", "32", "--workers", "1", "--threads", "1", "--no-progress"]
    small = ["-m", "libragrad_fx", "attribute", args.model, "--method", args.method, "--data", str(work / "tenth"),
             "--out", "out", "--shard-size", "64", "--batch-size", "32", "--workers", "1", "--threads", "1",
             "--no-progress"]
    steps = {
        "attribute, 1 process x 1 thread": (attribute + ["--threads", "1"], None),
        "attribute, 1 process x 2 threads": (attribute + ["--threads", "2"], None),
        "attribute, 2 processes x 1 thread": (torchrun + attribute + ["--threads", "1"], None),
        "attribute killed after a third of the shards": (attribute + ["--threads", "1"], -(-args.n // 64) // 3),
        "attribute restarted with the same command": (attribute + ["--threads", "1"], None),
        "bench --data, 1 process": (bench, None),
        "bench --data, 2 processes": (torchrun + bench, None),
        "attribute on a tenth of the images": (small, None),
    }
    folders = {name: work / name.split(",")[0].split()[0] / str(i) for i, name in enumerate(steps)}
    folders["attribute restarted with the same command"] = folders["attribute killed after a third of the shards"]
    if not (work / "tenth").is_dir():
        tenth = sorted(p for p in data.rglob("*.png"))[:max(1, args.n // 10)]
        for p in tenth:
            target = work / "tenth" / p.relative_to(data)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, target)
    for name, (command, kill) in steps.items():
        if name in results:
            continue
        if name != "attribute restarted with the same command":
            shutil.rmtree(folders[name], ignore_errors=True)
        print(f"running: {name}", file=sys.stderr, flush=True)
        results[name] = run(command, folders[name], kill)
        if kill is not None:
            shards = folders[name] / "out" / "shards"
            results[name]["shards_left"] = len(list(shards.glob("*.safetensors")))
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    out = {name: folders[name] / "out" for name in steps}
    base = out["attribute, 1 process x 1 thread"]
    checks = {
        "2 processes vs 1 (attribute)": same(out["attribute, 2 processes x 1 thread"], base),
        "killed and restarted vs uninterrupted (attribute)": same(out["attribute restarted with the same command"],
                                                                  base),
        "1 process x 2 threads vs x 1 thread (attribute)": same(out["attribute, 1 process x 2 threads"], base,
                                                                ignore=("manifest.json",)),
        "2 processes vs 1 (bench --data; results.csv's timing column aside)": same(
            out["bench --data, 2 processes"], out["bench --data, 1 process"]),
    }
    results["checks"] = checks
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print("| step | wall s | CPU s | CPU s / sample | samples/s (wall) | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in steps:
        r = results[name]
        n = r["samples"] if r["samples"] is not None else r.get("shards_left", 0) * 64
        cpu = f"{r['cpu_s']} | {r['cpu_s'] / n:.3f}" if r["cpu_s"] is not None else "- | -"
        print(f"| {name} | {r['wall_s']} | {cpu} | {n / r['wall_s']:.1f} | {r['peak_rss_mb'] or '-'} |")
    print()
    for name, verdict in checks.items():
        print(f"- {name}: {verdict}")


if __name__ == "__main__":
    main()
