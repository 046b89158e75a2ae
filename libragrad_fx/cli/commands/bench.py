"""`libragrad-fx bench`: the faithfulness comparison on the bundled models."""
from __future__ import annotations

import argparse

from .. import bench_data
from ..common import comma_list
from ..validate import positive_int, seed

TAKES_MODEL = False

DEFAULT_ROOT = "libragrad-bench"
"""Without ``--out`` each run writes into a fresh ``libragrad-bench/<date>-<time>`` folder."""


def _pixel_rules() -> tuple[str, ...]:
    from ...passes.pixel import PIXEL_RULES

    return PIXEL_RULES


def register(commands, parents) -> None:
    sub = commands.add_parser("bench", help="the faithfulness comparison on the bundled models (CSV, table, plots)")
    sub.add_argument("--text", action="store_true", help="the text benchmark instead: token attributions of the "
                     "bundled text classifier against known evidence tokens (libragrad_fx.text.bench)")
    sub.add_argument("--n", type=positive_int, default=500, help="images per model (--text: sentences; default 500)")
    sub.add_argument("--models", type=comma_list, metavar="M,..",
                     help="bundled models, comma-separated (default: every classifier; 'clip' runs the "
                     "prompt-conditioned benchmark)")
    sub.add_argument("--methods", type=comma_list, metavar="M,..", help="methods, comma-separated (default: all; a "
                     "gradient method runs vanilla and libragrad)")
    sub.add_argument("--pixel-rule", choices=_pixel_rules(), default=None,
                     help="also measure each gradient method with this pixel readout on the layer that reads the "
                     "image (dissent: dissent suppression; rows <backward>+dissent)")
    sub.add_argument("--seed", type=seed, default=None, help="image seed (default: the held-out seed)")
    sub.add_argument("--out", metavar="DIR", help=f"output folder, new or empty (default: a fresh "
                     f"./{DEFAULT_ROOT}/<date>-<time>)")
    sub.add_argument("--overwrite", action="store_true",
                     help="write into a non-empty --out folder, replacing its files of the same names")
    sub.add_argument("--batch", type=positive_int, default=32, help="targets per attribution call (default 32)")
    sub.add_argument("--ig-steps", type=positive_int, default=32, help="Integrated Gradients steps (default 32)")
    sub.add_argument("--sg-samples", type=positive_int, default=16, help="SmoothGrad samples (default 16)")
    sub.add_argument("--baseline", choices=("zero", "mean"), default="zero",
                     help="what deleted patches become: zero or each image's mean colour (default zero)")
    sub.add_argument("--readout", choices=("logit", "prob"), default="logit",
                     help="what the maps explain: the target's logit (default), or its sigmoid probability with the "
                     "head's backward kept (the reference implementation's default readout)")
    sub.add_argument("--jobs", type=positive_int, default=1, help="models measured in parallel processes (default 1)")
    sub.add_argument("--threads", type=positive_int, default=1, help="torch threads per process (default 1)")
    sub.add_argument("--lxt-python", metavar="PYTHON", help="a Python with lxt for AttnLRP (default "
                     "$LIBRAGRAD_FX_LXT_PYTHON, else this one; skipped with a note where none has lxt)")
    sub.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS,
                     help="no progress display on stderr (it is shown only on a terminal anyway)")
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    bench_data.add_arguments(sub)
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ...core.errors import UsageError

    if args.readout != "logit" and (args.data or args.text):
        raise UsageError("--readout applies to the bundled image classifiers (bench without --data or --text)")
    if args.data:
        return bench_data.run(args)
    from ...bench import models
    from ...bench.compare import run
    from ...bench.faithfulness import Config, resolve_methods
    from ...bench.figures import markdown
    from ..outdir import prepare, remove_if_empty
    from ..progress import per_item, step

    if args.text:
        if args.pixel_rule:
            raise UsageError("--pixel-rule applies to the image benchmark: a text model reads token ids, and no linear "
                             "map reads them")
        from ...text.bench_cli import run as run_text

        return run_text(args, prepare(args.out, DEFAULT_ROOT, overwrite=args.overwrite))
    valid = models.names() + models.names("clip")
    chosen = args.models or models.names()
    unknown = [m for m in chosen if m not in valid]
    if unknown:
        raise UsageError(f"--models: unknown bundled model(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if args.readout != "logit" and set(chosen) & set(models.names("clip")):
        raise UsageError("--readout applies to the classifiers: a CLIP's maps explain its similarity with a prompt")
    try:
        methods = resolve_methods(args.methods, args.pixel_rule)
    except ValueError as error:
        raise UsageError(f"--methods: {error}") from error
    out = prepare(args.out, DEFAULT_ROOT, overwrite=args.overwrite)
    patch = args.patch or 8  # the bundled models' patch size
    if 64 % patch:
        raise UsageError(f"--patch {patch}: must divide the bundled models' image size 64 (1, 2, 4, 8, 16, 32, 64)")
    config = Config(n=args.n, seed=args.seed, batch=args.batch, ig_steps=args.ig_steps, sg_samples=args.sg_samples,
                    lxt_python=args.lxt_python, threads=args.threads, baseline=args.baseline,
                    readout=args.readout, pixel_rule=args.pixel_rule, patch=patch)
    step(f"measuring {len(methods)} method rows on {', '.join(chosen)} ({args.n} images each)")
    try:
        outputs = run(chosen, methods, config, out, jobs=args.jobs, progress=per_item("  "))
    except BaseException:
        remove_if_empty(out)
        raise
    print(markdown(outputs.results).rstrip())
    for note in (n for r in outputs.results for n in r.notes):
        print(f"note: {note}")
    print(f"wrote {len(outputs.files)} files into {out}/: " + ", ".join(p.name for p in outputs.files))
    return 0
