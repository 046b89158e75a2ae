"""`libragrad-fx demo`: one two-object image, both classes explained, vanilla beside LibraGrad."""
from __future__ import annotations

import argparse

from ..validate import output_file, seed

TAKES_MODEL = False


def register(commands, parents) -> None:
    sub = commands.add_parser("demo", help="two objects, both classes explained by the bundled ViT, vanilla beside "
                              "LibraGrad (PNG)")
    sub.add_argument("--out", default="libragrad_demo.png", metavar="FILE.png",
                     help="where to write the grid (default libragrad_demo.png)")
    sub.add_argument("--seed", type=seed, default=None, help="image seed (default: the held-out seed)")
    sub.add_argument("--model", default="eva02", help="bundled model (default eva02: a Transformer that meets the detection requirement)")
    sub.add_argument("--text", action="store_true", help="the text demo instead: one sentence, its evidence, "
                     "token scores vanilla beside LibraGrad, in the terminal")
    sub.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS,
                     help="no progress display on stderr (it is shown only on a terminal anyway)")
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ...bench import models
    from ...bench.demo import run
    from ...core.errors import UsageError
    from ..progress import step

    if args.text:
        from ...text.demo import run as run_text

        run_text(seed=args.seed)
        return 0
    output_file(args.out, suffix=".png")
    if args.model not in models.names():
        raise UsageError(f"--model: unknown bundled model {args.model!r}; valid: {', '.join(models.names())}")
    result = run(args.out, seed=args.seed, model_name=args.model,
                 progress=step(f"explaining two objects with the bundled {args.model}"))
    print(result.text())
    return 0
