"""Steps every command shares: load the model and a probe input, transform it, write the result."""
from __future__ import annotations

import argparse
import sys

import torch

from ..attr import ALIASES as METHOD_ALIASES  # the short names the paper uses
from ..core.errors import UsageError
from .progress import step

__all__ = ["METHOD_ALIASES", "method_names", "comma_list", "load", "transform", "needs_original", "same_preset", "emit",
           "node_counts"]


def method_names() -> list[str]:
    from ..attr import METHODS

    return list(METHOD_ALIASES) + list(METHODS)


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def load(args: argparse.Namespace):
    """The model and an example input it accepts (a probe forward turns a wrong shape into one line)."""
    from .specs import example_input, load_model, probe

    step(f"loading {args.model}")
    loaded = load_model(args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
                        input_shape=args.input_shape, seed=args.seed)
    x = example_input(loaded, seed=args.seed)
    probe(loaded, x, "pass --input-shape with the shape it expects")
    return loaded, x


def transform(model, x: torch.Tensor, args: argparse.Namespace, preset: str | None = None):
    """``model`` transformed as the options say (``preset`` overrides ``--preset`` and leaves the pixel rule out)."""
    from ..core.transform import transform as run

    pixel = None if preset is not None else getattr(args, "pixel_rule", None)
    step(f"transforming (preset {preset or args.preset}{f', pixel rule {pixel}' if pixel else ''})")
    return run(model, x, preset=preset or args.preset, capture=args.capture, pixel_rule=pixel)


def needs_original(loaded, command: str) -> None:
    if loaded.transformed:
        raise UsageError(f"{command} needs the original model, and {loaded.label} holds only the transformed "
                         "program: run it on the MODEL you exported")


def same_preset(loaded, args: argparse.Namespace) -> None:
    made = loaded.exported.report.preset
    if args.preset != made:
        raise UsageError(f"{loaded.label} was exported with preset {made!r}: run on the original model for "
                         f"preset {args.preset!r}")
    pixel = getattr(loaded.exported.report, "pixel_rule", None)
    if getattr(args, "pixel_rule", None) != pixel:
        raise UsageError(f"{loaded.label} was exported with pixel rule {pixel or 'none'}: run on the original model "
                         f"for pixel rule {args.pixel_rule or 'none'}")


def emit(text: str, out: str | None) -> None:
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def node_counts(report) -> str:
    """How every command counts what the transform changed: the nodes a rule rewrote, and the nodes whose
    backward is pruned (same gradient, less work; some of them are rewritten nodes too)."""
    rewritten = {r.node for r in report.rewritten}
    pruned = {r.node for r in report.backward}
    text = f"{len(rewritten)} nodes rewritten by the rules"
    if pruned:
        text += f", {len(pruned)} with a pruned backward ({len(pruned - rewritten)} of them not rewritten by a rule)"
    return text
