"""`libragrad-fx bench`: the faithfulness comparison on the bundled models."""
from __future__ import annotations

import argparse

from ..common import comma_list

TAKES_MODEL = False


def register(commands, parents) -> None:
    sub = commands.add_parser("bench", help="the faithfulness comparison on the bundled models (CSV, table, plots)")
    sub.add_argument("--n", type=int, default=500, help="images per model (default 500)")
    sub.add_argument("--models", type=comma_list, help="bundled models, comma-separated (default: every "
                     "classifier; 'clip' runs the prompt-conditioned benchmark)")
    sub.add_argument("--methods", type=comma_list, help="methods, comma-separated (default: all; a gradient method "
                     "runs vanilla and libragrad)")
    sub.add_argument("--seed", type=int, default=None, help="image seed (default: the held-out seed)")
    sub.add_argument("--out", default="docs/bench/faithfulness", metavar="DIR",
                     help="output directory (default docs/bench/faithfulness)")
    sub.add_argument("--batch", type=int, default=32, help="targets per attribution call (default 32)")
    sub.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    sub.add_argument("--sg-samples", type=int, default=16, help="SmoothGrad samples (default 16)")
    sub.add_argument("--baseline", choices=("zero", "mean"), default="zero",
                     help="what deleted patches become: zero or each image's mean colour (default zero)")
    sub.add_argument("--jobs", type=int, default=1, help="models measured in parallel processes (default 1)")
    sub.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    sub.add_argument("--lxt-python", metavar="PYTHON", help="a Python with lxt for AttnLRP (default "
                     "$LIBRAGRAD_FX_LXT_PYTHON, else this one; skipped with a note where none has lxt)")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...bench import models
    from ...bench.compare import run
    from ...bench.faithfulness import Config, resolve_methods
    from ...core.errors import UsageError

    valid = models.names() + models.names("clip")
    chosen = args.models or models.names()
    unknown = [m for m in chosen if m not in valid]
    if unknown:
        raise UsageError(f"--models: unknown bundled model(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        methods = resolve_methods(args.methods)
    except ValueError as error:
        raise UsageError(f"--methods: {error}") from error
    for name in ("n", "batch", "ig_steps", "sg_samples", "jobs", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    config = Config(n=args.n, seed=args.seed, batch=args.batch, ig_steps=args.ig_steps, sg_samples=args.sg_samples,
                    lxt_python=args.lxt_python, threads=args.threads, baseline=args.baseline)
    outputs = run(chosen, methods, config, Path(args.out), jobs=args.jobs, show=not args.no_progress)
    for note in (n for r in outputs.results for n in r.notes):
        print(f"note: {note}")
    for path in outputs.files:
        print(f"wrote {path}")
    return 0
