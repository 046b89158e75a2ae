"""`libragrad-fx check`: does the rewrite keep its promises on this model?"""
from __future__ import annotations

import argparse
import json

from ..common import emit, load, same_preset, transform
from ..validate import positive_float

TAKES_MODEL = True


def register(commands, parents) -> None:
    sub = commands.add_parser("check", parents=parents, help="forward equality, completeness, timings")
    sub.add_argument("--tol", type=positive_float, default=1e-4, metavar="T",
                     help="relative completeness error allowed, > 0 (default 1e-4)")
    sub.add_argument("--json", action="store_true", help="print the results as JSON")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    from ..checks import run_checks
    from ...core.export import reference_mismatch

    loaded, x = load(args)
    if loaded.transformed:
        same_preset(loaded, args)
        report = run_checks(loaded.label, loaded.model, x, forward=lambda: reference_mismatch(loaded.exported),
                            preset=args.preset, tol=args.tol)
    else:
        start = time.perf_counter()
        gm = transform(loaded.model, x, args)
        seconds = time.perf_counter() - start
        report = run_checks(loaded.label, gm, x, original=loaded.model, preset=args.preset, tol=args.tol,
                            transform=lambda m: transform(m, x, args), timings={"transform": seconds})
    emit(json.dumps(report.to_dict(), indent=2) if args.json else str(report), None)
    return 0 if report.ok else 1
