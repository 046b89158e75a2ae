"""`libragrad-fx demo`: one two-object image, both classes explained, vanilla beside LibraGrad."""
from __future__ import annotations

import argparse

TAKES_MODEL = False


def register(commands, parents) -> None:
    sub = commands.add_parser("demo", help="two objects, both classes explained by the bundled ViT, vanilla beside "
                              "LibraGrad (PNG)")
    sub.add_argument("--out", default="libragrad_demo.png", metavar="FILE.png",
                     help="where to write the grid (default libragrad_demo.png)")
    sub.add_argument("--seed", type=int, default=None, help="image seed (default: the held-out seed)")
    sub.add_argument("--model", default="vit", help="bundled model (default vit)")
    sub.add_argument("--text", action="store_true", help="the text demo instead: one sentence, its evidence, "
                     "token scores vanilla beside LibraGrad, in the terminal")
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ...bench import models
    from ...bench.demo import run
    from ...core.errors import UsageError

    if args.text:
        from ...text.demo import run as run_text

        run_text(seed=args.seed)
        return 0
    if not args.out.endswith(".png"):
        raise UsageError(f"--out {args.out!r} must end in .png")
    if args.model not in models.names():
        raise UsageError(f"--model: unknown bundled model {args.model!r}; valid: {', '.join(models.names())}")
    result = run(args.out, seed=args.seed, model_name=args.model)
    print(result.text())
    return 0
