"""`libragrad-fx bench --text`: run :func:`libragrad_fx.text.bench.run` with progress and write its outputs."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["run"]


def run(args: argparse.Namespace, out: Path) -> int:
    """Measure the text bench with the command's options and write its files into ``out`` (prepared, empty)."""
    import torch

    from ..cli.outdir import remove_if_empty
    from ..cli.progress import step
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
    torch.set_num_threads(args.threads)
    config = Config(n=args.n, seed=args.seed, batch=min(args.batch, args.n), ig_steps=args.ig_steps,
                    sg_samples=args.sg_samples, lxt_python=args.lxt_python)
    try:
        result = measure(config, methods, progress=step(f"text bench: {args.n} sentences"))
        files = write(result, config, out)
    except BaseException:
        remove_if_empty(out)
        raise
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {len(files)} files into {out}/: " + ", ".join(Path(f).name for f in files))
    return 0
