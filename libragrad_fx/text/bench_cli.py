"""`libragrad-fx bench --text`: run :func:`libragrad_fx.text.bench.run` with a progress bar and write its outputs."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    import torch

    from ..core.errors import UsageError
    from .bench import Config, resolve_methods
    from .bench import run as measure
    from .bench_output import write

    if args.models:
        raise UsageError("--models does not apply to --text (it measures the bundled text classifier)")
    try:
        methods = resolve_methods(args.methods)
    except ValueError as error:
        raise UsageError(f"--methods: {error}") from error
    for name in ("n", "batch", "ig_steps", "sg_samples", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    torch.set_num_threads(args.threads)
    config = Config(n=args.n, seed=args.seed, batch=min(args.batch, args.n), ig_steps=args.ig_steps,
                    sg_samples=args.sg_samples, lxt_python=args.lxt_python)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("text"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=args.no_progress) as bar:
        task = bar.add_task("text", total=None)
        result = measure(config, methods, progress=lambda done, total: bar.update(task, completed=done, total=total))
    for note in result.notes:
        print(f"note: {note}")
    for path in write(result, config, Path(args.out or "docs/bench/text")):
        print(f"wrote {path}")
    return 0
