"""`libragrad-fx bench --model MODEL --data SOURCE [--masks DIR] [--n N]`: the faithfulness comparison
on the user's labelled images, through the dataset path (streaming, resumable, torchrun); the job is
:mod:`libragrad_fx.dataset.faithfulness`."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]

BUNDLED_RESULTS = "docs/bench/faithfulness"
"""Where the bundled benchmark's committed results live: a run on other data never writes there."""


def add_arguments(sub: argparse.ArgumentParser) -> None:
    """The ``bench`` options of a run on the user's data."""
    from .datarun import add_run_options, positive
    from .main import _kwargs

    group = sub.add_argument_group("on your own data (--data)")
    group.add_argument("--data", metavar="SOURCE", help="a labelled image folder (class subfolders) or a .csv / "
                       ".jsonl index: benchmark --model on it instead of the bundled models")
    group.add_argument("--model", metavar="MODEL", help="with --data: timm:NAME, package.module:factory, a bundled "
                       "model name or FILE.pt2")
    group.add_argument("--checkpoint", metavar="FILE", help="with --data: weights to load into --model")
    group.add_argument("--model-kwargs", type=_kwargs, default={}, metavar="JSON", help="with --data: keyword "
                       "arguments for --model's constructor")
    group.add_argument("--capture", default="auto", choices=("auto", "fx", "export"), help="how to capture the graph")
    group.add_argument("--masks", metavar="DIR", help="object masks: one image per sample at the same relative path "
                       "(ImageNet-S style); adds segmentation AP and the pointing game")
    group.add_argument("--mask-values", default="binary", choices=("binary", "class"), help="binary (default): "
                       "nonzero pixels are the object; class: pixels equal to the target + 1 are its object, other "
                       "nonzero pixels another object (class discrimination)")
    group.add_argument("--target", default="label", help="label (default), predicted, a class index or a column "
                       "of the index file")
    group.add_argument("--output", choices=("softmax", "sigmoid"), help="the probability deletion tracks (default: "
                       "sigmoid for bundled multi-label models, softmax otherwise)")
    group.add_argument("--patch", type=positive, help="deletion patch size (default: the model's patch size)")
    # torchrun's own parser reads --n as an ambiguous abbreviation of its options: --limit says the same
    group.add_argument("--limit", type=positive, dest="n", default=argparse.SUPPRESS, metavar="N",
                       help="the same as --n (use it under torchrun)")
    add_run_options(group, own=False)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..bench.faithfulness import resolve_methods
    from ..core.errors import UsageError
    from ..dataset import manifest as manifests
    from ..dataset.distributed import join
    from ..dataset.faithfulness import BenchJob, BenchSettings, patch_size
    from ..dataset.loader import ImageSamples
    from ..dataset.pipeline import Run, execute
    from ..dataset.preprocess import from_model
    from ..dataset.shards import Layout
    from ..dataset.sources import read_source
    from ..dataset.targets import parse_target
    from .datarun import load_for_data, report
    from .progress import enabled

    if not args.model:
        raise UsageError("bench --data needs --model MODEL (the model to benchmark on the data)")
    if args.models:
        raise UsageError("--models names bundled models for the bundled benchmark; with --data pass one --model")
    if args.jobs != 1:
        raise UsageError("bench --data runs one model: for more processes use torchrun --nproc-per-node N")
    if args.out is None:
        raise UsageError("bench --data needs --out DIR: the run's folder (the same command resumes into it)")
    if Path(args.out).resolve() == Path(BUNDLED_RESULTS).resolve():
        raise UsageError(f"bench --data writes its own results: pass --out DIR (not {BUNDLED_RESULTS}, the bundled "
                         "benchmark's)")
    for name in ("n", "batch", "ig_steps", "sg_samples", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.masks and not Path(args.masks).is_dir():
        raise UsageError(f"--masks {args.masks!r} is not a folder: give the folder of mask images")
    try:
        methods = resolve_methods(args.methods)
    except ValueError as error:
        raise UsageError(f"--methods: {error}") from error
    torch.set_num_threads(args.threads)
    world = join(args.device)
    try:
        source = read_source(args.data)
        source.samples = source.samples[:args.n]
        target = parse_target(args.target, source)
        seed = 0 if args.seed is None else args.seed
        loaded, example = load_for_data(args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs,
                                        input_shape=None, input_size=args.input_size, seed=seed)
        if loaded.transformed:
            raise UsageError(f"{loaded.label} holds only a transformed program: bench compares the vanilla and the "
                             "LibraGrad backward, so it needs the original MODEL")
        preprocess = from_model(loaded, args.input_size)
        patch = args.patch or patch_size(loaded.model, loaded.label)
        if preprocess.size[0] % patch or preprocess.size[1] % patch:
            raise UsageError(f"the image size {preprocess.size} is not a multiple of the patch size {patch}: pass "
                             "--patch or --input-size")
        output = args.output or ("sigmoid" if loaded.kind == "bundled" else "softmax")
        settings = BenchSettings(
            model=args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs, capture=args.capture,
            methods=tuple(m.name for m in methods), target=target.describe(), output=output, patch=patch,
            baseline=args.baseline, masks=str(Path(args.masks).resolve()) if args.masks else None,
            mask_values=args.mask_values, n=len(source), ig_steps=args.ig_steps, sg_samples=args.sg_samples,
            seed=seed, precision=args.precision, device=world.device.type, batch=args.batch,
            shard_size=args.shard_size)
        layout = Layout(len(source), args.shard_size)
        manifest = manifests.build(["libragrad-fx", *getattr(args, "argv", [])], settings.describe(),
                                   source.describe(), preprocess.describe(),
                                   {"shards": layout.count, "shard_size": layout.size, "samples": layout.samples})
        job = BenchJob(loaded, example, source, settings, methods, target, world.device)
        dataset = ImageSamples(source.samples, preprocess, masks=Path(args.masks) if args.masks else None)
        outcome = execute(job, dataset, layout, manifest,
                          Run(Path(args.out), args.batch, args.workers, args.overwrite, args.max_shards,
                              enabled(args), "bench"), world)
        if world.main:
            report("bench", outcome, layout.samples)
            for note in job.notes:
                print(f"note: {note}")
    finally:
        world.close()
    return 0
