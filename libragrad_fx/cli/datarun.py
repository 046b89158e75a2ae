"""Steps the dataset commands share (``attribute``, ``bench --data``): how a run executes, the model
with a probe input, the one-line report at the end."""
from __future__ import annotations

import argparse

__all__ = ["add_run_options", "load_for_data", "positive", "count", "size", "report"]


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def size(text: str) -> tuple[int, int]:
    """``224`` or ``224,160`` -> (H, W)."""
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: give H,W or one number, e.g. 224")
    return values  # type: ignore[return-value]


def add_run_options(sub: argparse.ArgumentParser, *, own: bool = True) -> None:
    """How a dataset run executes; none of it changes the numbers but ``--precision`` (in the
    manifest). ``own``: also ``--batch-size``, ``--threads`` and ``--overwrite`` (``bench`` has its own)."""
    if own:
        sub.add_argument("--batch-size", type=positive, default=32, help="samples per attribution call (default 32)")
    sub.add_argument("--workers", type=count, default=2, help="DataLoader processes decoding images (default 2; 0: "
                     "decode in the main process)")
    sub.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (under torchrun: each rank's GPU)")
    sub.add_argument("--precision", default="float32", choices=("float32", "float16", "bfloat16"),
                     help="compute precision: float32 (default), or float16 / bfloat16 autocast")
    sub.add_argument("--input-size", type=size, metavar="H,W", help="image size (default: the model's own)")
    sub.add_argument("--shard-size", type=positive, default=256, help="samples per shard file (default 256)")
    if own:  # bench's own --overwrite says the same for a run on data
        sub.add_argument("--overwrite", action="store_true", help="replace what --out holds from a different command")
    sub.add_argument("--max-shards", type=positive, metavar="K", help="write at most K shards per process, then "
                     "stop (rerun the same command to continue)")
    if own:
        sub.add_argument("--threads", type=positive, help="torch threads per process (default: torch's)")


def load_for_data(spec: str, *, checkpoint: str | None, model_kwargs: dict, input_shape, input_size, seed: int):
    """The model (``input_size`` sets its input's height and width) and a seeded example input it accepts."""
    from .specs import example_input, load_model, probe

    loaded = load_model(spec, checkpoint=checkpoint, model_kwargs=model_kwargs, input_shape=input_shape, seed=seed)
    if input_size is not None:
        channels = loaded.input_shape[1] if loaded.input_shape and len(loaded.input_shape) == 4 else 3
        loaded.input_shape = (1, channels, *input_size)
    x = example_input(loaded, batch=1, seed=seed)
    probe(loaded, x, "pass --input-size with the image size it expects")
    return loaded, x


def report(what: str, outcome, samples_in_all: int) -> None:
    """The summary, on rank 0: samples, errors, the job's own lines, wall time, samples/s."""
    rate = outcome.samples / outcome.seconds if outcome.seconds > 0 else float("nan")
    print(f"{what}: {outcome.samples} samples this run ({samples_in_all} in all), {outcome.errors} without a map "
          f"(unreadable or no target); {outcome.seconds:.1f} s wall, {rate:.2f} samples/s")
    for line in outcome.lines:
        print(line)
    if not outcome.complete:
        print(f"{outcome.done} of {outcome.total} shards done: rerun the same command to continue")
