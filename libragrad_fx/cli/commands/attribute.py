"""`libragrad-fx attribute`: explain every sample of a dataset into sharded safetensors, an index and a manifest.

Streaming (a DataLoader over the shards), resumable (finished shards are skipped), and under
``torchrun --nproc-per-node N`` split over N processes (gloo on CPU, nccl on GPU) with the same
files as one process: see :mod:`libragrad_fx.dataset`.
"""
from __future__ import annotations

import argparse

TAKES_MODEL = True


def register(commands, parents) -> None:
    from ..common import method_names
    from ..datarun import add_run_options, count, positive

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
    sub.add_argument("--png", type=count, default=0, metavar="N", help="also write overlays of the first N samples")
    sub.add_argument("--ig-steps", type=positive, default=32, help="Integrated Gradients steps (default 32)")
    sub.add_argument("--sg-samples", type=positive, default=16, help="SmoothGrad samples (default 16)")
    add_run_options(sub)
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ...dataset import manifest as manifests
    from ...dataset.attribute import AttributeJob, MapSettings
    from ...dataset.distributed import join
    from ...dataset.loader import ImageSamples
    from ...dataset.pipeline import Run, execute
    from ...dataset.preprocess import from_model
    from ...dataset.shards import Layout
    from ...dataset.sources import read_source
    from ...dataset.targets import parse_target
    from ..common import METHOD_ALIASES, same_preset
    from ..datarun import load_for_data, report
    from ..progress import enabled

    if args.threads:
        torch.set_num_threads(args.threads)
    world = join(args.device)
    try:
        source = read_source(args.data)
        target = parse_target(args.target, source)
        loaded, example = load_for_data(args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
                                        input_shape=args.input_shape, input_size=args.input_size, seed=args.seed)
        if loaded.transformed:
            same_preset(loaded, args)
        preprocess = from_model(loaded, args.input_size)
        settings = MapSettings(
            model=args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
            method=METHOD_ALIASES.get(args.method, args.method), preset=args.preset, capture=args.capture,
            target=target.describe(), dtype=args.dtype, channels=args.channels, precision=args.precision,
            device=world.device.type, batch_size=args.batch_size, shard_size=args.shard_size, ig_steps=args.ig_steps,
            sg_samples=args.sg_samples, seed=args.seed, png=args.png, pixel_rule=args.pixel_rule)
        layout = Layout(len(source), args.shard_size)
        manifest = manifests.build(["libragrad-fx", *getattr(args, "argv", [])], settings.describe(),
                                   source.describe(), preprocess.describe(),
                                   {"shards": layout.count, "shard_size": layout.size, "samples": layout.samples})
        out = Path(args.out)
        job = AttributeJob(loaded, example, source, settings, target, world.device, out)
        dataset = ImageSamples(source.samples, preprocess, pictures_below=args.png)
        outcome = execute(job, dataset, layout, manifest,
                          Run(out, args.batch_size, args.workers, args.overwrite, args.max_shards,
                              enabled(args), "attribute"), world)
        if world.main:
            report("attribute", outcome, layout.samples)
    finally:
        world.close()
    return 0

