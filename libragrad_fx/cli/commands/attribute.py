"""`libragrad-fx attribute`: explain every sample of a dataset into sharded safetensors, an index and a manifest.

Streaming (a DataLoader over the shards), resumable (finished shards are skipped), and under
``torchrun --nproc-per-node N`` split over N processes (gloo on CPU, nccl on GPU) with the same
files as one process: see :mod:`libragrad_fx.dataset`.
"""
from __future__ import annotations

import argparse

TAKES_MODEL = True


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def size(text: str) -> tuple[int, int]:
    """``224`` or ``224,160`` -> (H, W)."""
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: give H,W or one number, e.g. 224")
    return values  # type: ignore[return-value]


def add_run_options(sub: argparse.ArgumentParser, batch: bool = True) -> None:
    """How to execute a dataset run (shared with ``bench --data``); none of it changes the numbers."""
    if batch:
        sub.add_argument("--batch-size", type=_positive, default=32, help="samples per attribution call (default 32)")
    sub.add_argument("--workers", type=_count, default=2, help="DataLoader processes decoding images (default 2; 0: "
                     "decode in the main process)")
    sub.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (under torchrun: each rank's GPU)")
    sub.add_argument("--precision", default="float32", choices=("float32", "float16", "bfloat16"),
                     help="compute precision: float32 (default), or float16 / bfloat16 autocast")
    sub.add_argument("--input-size", type=size, metavar="H,W", help="image size where the model's own cannot be read")
    sub.add_argument("--shard-size", type=_positive, default=256, help="samples per shard file (default 256)")
    sub.add_argument("--overwrite", action="store_true", help="replace what --out holds from a different command")
    sub.add_argument("--max-shards", type=_positive, metavar="K", help="write at most K shards per process, then "
                     "stop (rerun the same command to continue)")
    sub.add_argument("--threads", type=_positive, help="torch threads per process (default: torch's)")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(commands, parents) -> None:
    from ..common import method_names

    sub = commands.add_parser("attribute", parents=parents, help="explain every sample of a dataset (sharded "
                              "safetensors, index, manifest; resumable; torchrun for more processes)")
    sub.add_argument("--data", required=True, metavar="SOURCE", help="a folder of images (class subfolders give "
                     "labels) or a .csv / .jsonl index with a 'path' column")
    sub.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun continues it)")
    sub.add_argument("--method", default="fullgrad", choices=method_names(),
                     help="attribution method (default fullgrad)")
    sub.add_argument("--target", default="predicted", help="predicted (default), a class index, label (the sample's "
                     "label) or a column of the index file")
    sub.add_argument("--dtype", default="float16", choices=("float16", "float32", "bfloat16"),
                     help="how maps are stored (default float16)")
    sub.add_argument("--channels", default="sum", choices=("sum", "keep"),
                     help="maps shaped like the input: store their channel sum (default) or every channel")
    sub.add_argument("--png", type=_count, default=0, metavar="N", help="also write overlays of the first N samples")
    sub.add_argument("--ig-steps", type=_positive, default=32, help="Integrated Gradients steps (default 32)")
    sub.add_argument("--sg-samples", type=_positive, default=16, help="SmoothGrad samples (default 16)")
    add_run_options(sub)
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...dataset import manifest as manifests
    from ...dataset.attribute import AttributeJob, MapSettings
    from ...dataset.distributed import join
    from ...dataset.loader import ImageSamples
    from ...dataset.pipeline import Run, execute
    from ...dataset.preprocess import from_model
    from ...dataset.progress import summary_line
    from ...dataset.shards import Layout
    from ...dataset.sources import read_source
    from ...dataset.targets import parse_target
    from ..common import METHOD_ALIASES, same_preset

    world = join(args.device)
    try:
        source = read_source(args.data)
        target = parse_target(args.target, source)
        loaded, example = load_for_data(args)
        if loaded.transformed:
            same_preset(loaded, args)
        preprocess = from_model(loaded, args.input_size)
        settings = MapSettings(
            model=args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
            method=METHOD_ALIASES.get(args.method, args.method), preset=args.preset, capture=args.capture,
            target=target.describe(), dtype=args.dtype, channels=args.channels, precision=args.precision,
            device=world.device.type, batch_size=args.batch_size, shard_size=args.shard_size, ig_steps=args.ig_steps,
            sg_samples=args.sg_samples, seed=args.seed, png=args.png)
        layout = Layout(len(source), args.shard_size)
        manifest = manifests.build(["libragrad-fx", *getattr(args, "argv", [])], settings.describe(),
                                   source.describe(), preprocess.describe(),
                                   {"shards": layout.count, "shard_size": layout.size, "samples": layout.samples})
        out = Path(args.out)
        job = AttributeJob(loaded, example, source, settings, target, world.device, out)
        dataset = ImageSamples(source.samples, preprocess, pictures_below=args.png)
        outcome = execute(job, dataset, layout, manifest,
                          Run(out, args.batch_size, args.workers, args.overwrite, args.max_shards,
                              not args.no_progress, "attribute"), world)
        if world.main:
            print(summary_line("attribute", outcome.samples, layout.samples, outcome.errors, outcome.seconds))
            for line in outcome.lines:
                print(line)
            if not outcome.complete:
                print(f"{outcome.done} of {outcome.total} shards done: rerun the same command to continue")
    finally:
        world.close()
    return 0


def load_for_data(args: argparse.Namespace):
    """The model (``--input-size`` sets its input's height and width) and a seeded example input it accepts."""
    import torch

    from ...core.errors import UsageError, first_line
    from ..specs import example_input, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
                        input_shape=args.input_shape, seed=args.seed)
    if args.input_size is not None:
        channels = loaded.input_shape[1] if loaded.input_shape and len(loaded.input_shape) == 4 else 3
        loaded.input_shape = (1, channels, *args.input_size)
    x = example_input(loaded, batch=1, seed=args.seed)
    try:
        with torch.no_grad():
            loaded.model(x)
    except Exception as error:
        raise UsageError(f"{loaded.label} rejects an input of shape {tuple(x.shape)} ({type(error).__name__}: "
                         f"{first_line(error)}); pass --input-size with the image size it expects") from error
    return loaded, x
