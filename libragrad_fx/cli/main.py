"""The ``libragrad-fx`` command line: see what the transform does to a model, check it, explain with it, ship it.

    libragrad-fx inspect MODEL [--preset P] [--format text|json|dot]
    libragrad-fx diff    MODEL [--preset P] [--format text|json]
    libragrad-fx check   MODEL [--preset P] [--tol T] [--json]
    libragrad-fx explain MODEL (--image PATH | --random) --out FILE.png [--method M] [--target N] [--compare] [--json]
    libragrad-fx explain hf:DIR --text "..." [--pair "..."] [--target T] [--html FILE] [--out FILE.png]
    libragrad-fx attribute MODEL --data SOURCE --out DIR [--method M] [--target T] [--batch-size B] [--workers W]
    libragrad-fx export  MODEL --out FILE.pt2 [--preset P]
    libragrad-fx demo    [--out FILE.png] [--seed N] [--model NAME] | demo --text
    libragrad-fx bench   [--text] [--n N] [--models M,..] [--methods M,..] [--seed N] [--out DIR [--overwrite]] [--jobs J]
    libragrad-fx bench   --model MODEL --data SOURCE --out DIR [--masks DIR] [--n N]
    libragrad-fx --version

MODEL is ``timm:NAME``, ``package.module:factory``, a bundled model name, ``hf:DIR`` (a saved Hugging Face
model) or a ``.pt2`` file written by ``export`` (:mod:`libragrad_fx.cli.specs`). Exit codes: 0 success, 1 ``check`` found a property
that does not hold, 2 bad input or a model the tool cannot handle (one line on stderr; ``--debug``
adds the traceback). Every option is checked before any work starts. Progress goes to stderr while
a command works, when stderr is a terminal (``--no-progress`` turns it off).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
import warnings
from typing import Iterator, Sequence

from ..core.errors import first_line

__all__ = ["main", "build_parser"]

PROG = "libragrad-fx"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _shape(text: str) -> tuple[int, ...]:
    from .specs import parse_shape

    try:
        return parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-kwargs is not JSON ({error.msg}): write e.g. "
                                         "'{\"img_size\": 64}'") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--model-kwargs must be a JSON object, e.g. '{\"img_size\": 64}'")
    return value


def _presets() -> list[str]:
    from ..core.transform import PRESETS

    return list(PRESETS)


def _pixel_rules() -> tuple[str, ...]:
    from ..core.transform import PIXEL_RULES

    return PIXEL_RULES


def build_parser() -> argparse.ArgumentParser:
    """The parser: shared options, then one subparser per module in :mod:`libragrad_fx.cli.commands`."""
    from . import validate
    from .commands import COMMANDS
    from .. import __version__

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("model", metavar="MODEL",
                       help="timm:NAME, package.module:factory, a bundled model name, or FILE.pt2")
    model.add_argument("--checkpoint", metavar="FILE", help="weights to load (.pth/.safetensors state dict)")
    model.add_argument("--model-kwargs", type=_kwargs, default={}, metavar="JSON",
                       help="keyword arguments for the model's constructor, e.g. '{\"img_size\": 64}'")
    model.add_argument("--input-shape", type=_shape, metavar="N,C,H,W",
                       help="input shape where the model's default cannot be read (e.g. 1,3,224,224)")
    model.add_argument("--seed", type=validate.seed, default=0,
                       help="seed of random weights and random inputs (default 0)")
    model.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")
    model.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS,
                       help="no progress display on stderr (it is shown only on a terminal anyway)")
    rewrite = argparse.ArgumentParser(add_help=False)
    rewrite.add_argument("--preset", default="libragrad", choices=_presets(),
                         help="rule families to apply (default libragrad: all four)")
    rewrite.add_argument("--pixel-rule", choices=_pixel_rules(), default=None,
                         help="a pixel readout on the layer that reads the input (dissent: dissent suppression on "
                         "the patch embedding or stem; default none)")
    rewrite.add_argument("--capture", default="auto", choices=("auto", "fx", "export"),
                         help="how to capture the graph (default auto: torch.fx, torch.export where fx fails)")

    parser = _Parser(prog=PROG, description="Faithful gradient explanations: see, check and ship the "
                     "LibraGrad rewrite of a PyTorch model.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="print the version and exit")
    parser.add_argument("--debug", action="store_true", default=False, help="show the traceback of an error")
    parser.add_argument("--no-progress", action="store_true", default=False,
                        help="no progress display on stderr (it is shown only on a terminal anyway)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
                                     help="what to do (`libragrad-fx COMMAND --help` lists its options)")
    for command in COMMANDS:
        command.register(commands, [model, rewrite] if command.TAKES_MODEL else [])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    from ..core.capture import CaptureError
    from ..core.errors import UsageError
    from . import progress

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed in one line
        return int(stop.code or 0)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded by commands that write a manifest
    try:
        with _quiet(), progress.shown(progress.enabled(args)):
            return args.run(args)
    except (UsageError, CaptureError, OSError) as error:
        return _fail(args, str(error))
    except Exception as error:  # a bug, or a model the core cannot handle: still one line
        return _fail(args, f"{type(error).__name__}: {first_line(error)} (rerun with --debug for the traceback)")


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"{PROG}: error: {first_line(message, limit=2000)}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The commands print what the transform reports; its warnings would say it twice."""
    from ..core.report import UnclassifiedOpWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnclassifiedOpWarning)
        yield
