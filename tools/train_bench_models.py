"""Train a bundled bench model on freshly generated images and write weights + model card.

    python tools/train_bench_models.py --model vit --out libragrad_fx/bench/weights

Every step draws a new batch from the generator (infinite data, so no augmentation or epochs
are needed): ``generate(batch, seed=TRAIN_SEED_BASE + step)`` with one or two objects per
image at random, or, with ``two_object_fraction`` f, ``generate(round(f * batch),
seed=TRAIN_SEED_BASE + step, two_objects=True)`` next to ``generate(batch - that,
seed=TRAIN_SEED_BASE + ONE_OBJECT_SEED_OFFSET + step, two_objects=False)``. The held-out sets
use ``HELDOUT_SEED``, a seed never used for training. Weights are stored as float16
safetensors and the reported held-out numbers are measured on those float16 weights.

A run with ``--checkpoint PATH`` saves its state there every ``--checkpoint-every`` steps and
resumes from it when started again with the same command (the data of a step depends only on
its seed, so a resumed run sees the same images as an uninterrupted one).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libragrad_fx.bench.data import HELDOUT_SEED, NUM_CLASSES, TRAIN_SEED_BASE, Batch, generate  # noqa: E402
from libragrad_fx.bench.evaluate import detection, evaluate, two_object_heldout  # noqa: E402
from libragrad_fx.bench.models import ARCHITECTURES, build  # noqa: E402

# One-object images of a step come from their own seed range, so that with two_object_fraction
# they are not drawn from the same stream as the step's two-object images.
ONE_OBJECT_SEED_OFFSET = 500_000
# Monitoring during training reads its own held-out seed, never the cards' (no selection on it).
MONITOR_SEED = HELDOUT_SEED + 2

# Per-model recipe defaults: the shipped weights' recipes. A run from scratch lets clutter rise
# from 0 (plain backgrounds) to the benchmark's 1.0 over the first half of training. The Mixer's
# base run trains on standardised images (folded into the stem afterwards): on the raw [0, 1]
# images every token shares a large common component and it stalled at the label prior.
_BASE = dict(batch=64, lr=1e-3, wd=0.05, warmup=50, beta2=0.999, clutter_start=0.0, clutter_ramp=0.5,
             two_object_fraction=None, ema=0.0, teacher=None, kd_weight=0.0, kd_temperature=1.0,
             token_label_weight=0.0)
# A continuation ("base": the recipe of the run it starts from) sees full clutter only, three
# quarters of its images with two objects (the detection requirement is measured on those).
_CONTINUE = dict(lr=5e-4, warmup=20, clutter_start=1.0, two_object_fraction=0.75)
# A distillation continuation also learns from the bundled EVA02's sigmoids (half of the loss) at
# the base runs' learning rate: the Mixer left the label prior in its base run but stalled far
# below the detection requirement on labels alone.
_DISTIL = dict(_CONTINUE, lr=1e-3, warmup=50, teacher="eva02", kd_weight=0.5)
# Base run on plain backgrounds rising to full clutter, then a full-clutter continuation.
_FROM_SCRATCH = dict(_BASE, **_CONTINUE, steps=1200, normalize=False, pos_embed_init="default",
                     base=dict(_BASE, steps=2000, normalize=False, pos_embed_init="default"))
RECIPES: dict[str, dict] = {
    "eva02": _FROM_SCRATCH,
    # The other Transformers (rotary positions, GELU MLPs) leave their base runs further from the
    # requirement than the EVA02: their continuation also learns from it, and runs longer (longest
    # for the DeiT-III layout, whose class-token readout had the weakest base run).
    "vit": dict(_FROM_SCRATCH, **_DISTIL, steps=3000),
    "deit3": dict(_FROM_SCRATCH, **_DISTIL, steps=5000),
    "siglip": dict(_FROM_SCRATCH, **_DISTIL, steps=3000),
    "mixer": dict(_BASE, **_DISTIL, steps=4000, normalize=False, pos_embed_init="default",
                  base=dict(_BASE, steps=2600, normalize=True, pos_embed_init="default")),
}


def clutter_at(progress: float, start: float, ramp: float) -> float:
    """Curriculum: clutter rises linearly from ``start`` to 1 over the first ``ramp`` of training."""
    if ramp <= 0:
        return 1.0
    return min(1.0, start + (1.0 - start) * progress / ramp)


def lr_at(step: int, progress: float, base: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay (in training progress) to 2%."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def training_batch(step: int, batch: int, clutter: float, two_object_fraction: float | None) -> Batch:
    """The images of training step ``step`` (``step`` already includes any warm-start offset)."""
    seed = TRAIN_SEED_BASE + step
    if two_object_fraction is None:
        return generate(batch, seed=seed, clutter=clutter)
    n2 = round(two_object_fraction * batch)
    two = generate(n2, seed=seed, two_objects=True, clutter=clutter)
    one = generate(batch - n2, seed=seed + ONE_OBJECT_SEED_OFFSET, two_objects=False, clutter=clutter)
    return Batch(torch.cat([two.images, one.images]), torch.cat([two.labels, one.labels]),
                 torch.cat([two.masks, one.masks]))


def describe_data(batch: int, offset: int, steps: int, recipe: dict) -> str:
    """The card's ``train_data``: which generator calls made the training images."""
    ramp = (f"c rises linearly from {recipe['clutter_start']} to 1.0 over the first "
            f"{recipe['clutter_ramp']:.0%} of steps")
    f = recipe["two_object_fraction"]
    if f is None:
        return (f"generate({batch}, seed=TRAIN_SEED_BASE + {offset} + step, clutter=c(step)) for step in "
                f"range({steps}), TRAIN_SEED_BASE={TRAIN_SEED_BASE}, two_objects=None (mixed); {ramp}")
    n2 = round(f * batch)
    return (f"generate({n2}, seed=TRAIN_SEED_BASE + {offset} + step, two_objects=True, clutter=c(step)) and "
            f"generate({batch - n2}, seed=TRAIN_SEED_BASE + {ONE_OBJECT_SEED_OFFSET} + {offset} + step, "
            f"two_objects=False, clutter=c(step)) for step in range({steps}), TRAIN_SEED_BASE={TRAIN_SEED_BASE}; "
            f"{ramp}")


def input_stats(n: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of full-clutter training images (the first training seed)."""
    x = generate(n, seed=TRAIN_SEED_BASE, clutter=1.0).images
    return x.mean((0, 2, 3)), x.std((0, 2, 3))


def stem_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The model's first convolution on the image (timm's patch embedding / stem)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3:
            if m.bias is None or m.padding not in ((0, 0), "valid") or m.stride != m.kernel_size:
                raise ValueError("cannot fold input normalisation into a padded, overlapping or bias-free stem")
            return m
    raise ValueError("model has no 3-channel Conv2d stem to fold the input normalisation into")


@torch.no_grad()
def fold_normalisation(model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Rewrite the stem so ``model(x)`` equals the trained ``model((x - mean) / std)``.

    The stem is a non-overlapping, unpadded convolution, so ``conv((x - m) / s)`` is
    ``conv'(x)`` with ``W' = W / s`` and ``b' = b - sum(W' * m)``: the shipped model stays a
    stock timm module taking the generator's images as they come.
    """
    conv = stem_conv(model)
    conv.weight.div_(std.view(1, -1, 1, 1))
    conv.bias.sub_((conv.weight * mean.view(1, -1, 1, 1)).sum((1, 2, 3)))


@torch.no_grad()
def init_sincos_pos_embed(model: torch.nn.Module) -> None:
    """Start a learned ``pos_embed`` at the fixed 2-D sin-cos embedding (prefix tokens at 0)."""
    from timm.layers import build_sincos2d_pos_embed

    pos, grid = getattr(model, "pos_embed", None), getattr(model.patch_embed, "grid_size", None)
    if not isinstance(pos, torch.nn.Parameter) or grid is None:
        raise ValueError(f"{type(model).__name__} has no learned pos_embed over a patch grid to initialise")
    table = build_sincos2d_pos_embed(list(grid), dim=pos.shape[-1])
    pos.zero_()
    pos[0, pos.shape[1] - table.shape[0]:] = table


def prefix_tokens(model: torch.nn.Module) -> int:
    """Class/register tokens ahead of the patch tokens in ``forward_features`` (none for a Mixer)."""
    return int(getattr(model, "num_prefix_tokens", 0))


def token_label_loss(head: torch.nn.Module, feats: torch.Tensor, masks: torch.Tensor, prefix: int,
                     patch: int = 8) -> torch.Tensor:
    """Token labelling: every patch token predicts which objects cover its patch.

    The target of patch p and class c is the share of p's pixels inside the object mask of c (0 on
    the background), scored with BCE through an auxiliary linear head on the final patch tokens.
    """
    target = F.avg_pool2d(masks.float(), patch).flatten(2).transpose(1, 2)  # (n, patches, C)
    return F.binary_cross_entropy_with_logits(head(feats[:, prefix:]), target)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-label distillation: BCE of the student's tempered logits against the teacher's sigmoids."""
    t = temperature
    return F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * (t * t)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """Exponential moving average of the weights, with the usual warm-up of the decay."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.lerp_(p, 1 - d)
        else:
            e.copy_(p)


def load_bundled(spec: str) -> tuple[torch.nn.Module, dict]:
    """A bundled model by name, or a ``<name>.safetensors`` file with its ``.json`` card next to it."""
    from safetensors.torch import load_file

    from libragrad_fx.bench import models

    if spec in models.names():
        return models.load(spec), models.card(spec)
    path = Path(spec)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise SystemExit(f"--teacher: {spec!r} is neither a bundled model ({models.names()}) nor a "
                         "weight file with its .json card next to it")
    meta = json.loads(path.with_suffix(".json").read_text())
    model = build(meta["timm_class"], meta["kwargs"])
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.float().eval(), meta


def recipe_of(card: dict, like: dict) -> dict:
    """The keys of ``like`` as a card recorded them (cards older than an option lack it: its default)."""
    defaults = {**_BASE, "normalize": False, "pos_embed_init": "default"}
    got = {k: card.get(k, defaults.get(k)) for k in like}
    if isinstance(like.get("base"), dict) and isinstance(got.get("base"), dict):
        got["base"] = recipe_of(got["base"], like["base"])  # a base recorded before an option existed
    return got


def _seeds_used(card: dict) -> int:
    """Number of training seeds consumed by a card's run and its warm-start ancestors."""
    own = card.get("steps_run", card["steps"])
    return own + (_seeds_used(card["init_from"]) if card.get("init_from") else 0)


def measure(args: argparse.Namespace) -> int:
    """Measure shipped weights on the held-out sets again and record the numbers in their card."""
    from safetensors.torch import load_file

    wpath = args.out / f"{args.model}.safetensors"
    cpath = wpath.with_suffix(".json")
    if not wpath.is_file() or not cpath.is_file():
        raise SystemExit(f"--measure-only: {wpath} or its card {cpath.name} is missing")
    card = json.loads(cpath.read_text())
    model = build(card["timm_class"], card["kwargs"])
    model.load_state_dict({k: v.float() for k, v in load_file(str(wpath)).items()})
    model.float().eval()
    rep = evaluate(model, generate(args.eval_n, seed=args.eval_seed))
    two = detection(model, two_object_heldout(args.eval_two_n, seed=args.eval_seed))
    card["heldout"] = {"seed": args.eval_seed, "two_objects": "mixed", "clutter": 1.0, **rep}
    card["heldout_two_objects"] = {"seed": args.eval_seed, "two_objects": True, "clutter": 1.0, **two}
    cpath.write_text(json.dumps(card, indent=2) + "\n")
    print(f"[{args.model}] {wpath}: mean per-class acc {rep['mean_per_class_accuracy']:.4f}, two-object "
          f"recall {two['object_recall']:.4f}, exact set {two['exact_match']:.4f}; card updated", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=sorted(ARCHITECTURES))
    ap.add_argument("--out", type=Path, required=True, help="directory for <model>.safetensors/.json")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--wd", type=float)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--beta2", type=float, help="AdamW beta2")
    ap.add_argument("--clutter-start", dest="clutter_start", type=float)
    ap.add_argument("--clutter-ramp", dest="clutter_ramp", type=float)
    ap.add_argument(
        "--two-object-fraction", dest="two_object_fraction", type=float,
        help="share of each batch drawn with two objects (the rest with one); default: each image "
        "has two objects with probability 1/2",
    )
    ap.add_argument("--ema", type=float, help="EMA decay of the weights (0: off); the EMA weights ship")
    ap.add_argument("--teacher", default=None,
                    help="distil from this bundled model (name) or weight file (with its .json card)")
    ap.add_argument("--kd-weight", dest="kd_weight", type=float,
                    help="loss = (1 - w) * BCE(labels) + w * BCE(teacher's sigmoids); needs --teacher")
    ap.add_argument("--kd-temperature", dest="kd_temperature", type=float)
    ap.add_argument("--recipe", type=json.loads, default=None, metavar="JSON",
                    help="the whole recipe as JSON instead of the model's default (how a recipe's base run "
                    "is started); other options still override its keys")
    ap.add_argument("--token-label-weight", dest="token_label_weight", type=float,
                    help="token labelling: add this weight times the BCE of an auxiliary per-patch head "
                    "(discarded after training) against each patch's object-mask coverage")
    ap.add_argument(
        "--arch", type=json.loads, default={}, metavar="JSON",
        help='override architecture kwargs of models.ARCHITECTURES, e.g. \'{"global_pool": "avg"}\'',
    )
    ap.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=None,
        help="train on per-channel standardised images; the normalisation is folded into the "
        "stem convolution before saving, so the shipped model still takes raw [0, 1] images",
    )
    ap.add_argument(
        "--pos-embed-init", dest="pos_embed_init", choices=("default", "sincos"), default=None,
        help="sincos: start the learned position embedding at the 2-D sin-cos table",
    )
    ap.add_argument("--no-base", action="store_true",
                    help="train only this run of a recipe that continues a base run (from scratch, or from "
                    "--init-from); without it and without --init-from the base run is trained first")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for init")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=1000, help="held-out images, one or two objects each")
    ap.add_argument("--eval-two-n", type=int, default=500, help="held-out images with two objects each")
    ap.add_argument("--eval-seed", type=int, default=HELDOUT_SEED)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--monitor-every", type=int, default=0,
                    help="every K steps print recall / exact match on 200 two-object images of a "
                    "separate held-out seed (never the card's)")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="save the training state here periodically; resume from it if it exists")
    ap.add_argument("--checkpoint-every", type=int, default=200)
    ap.add_argument("--pause-after", type=int, default=None, metavar="N",
                    help="with --checkpoint: stop after N steps of this invocation (checkpoint saved, no "
                    "weights written); the same command resumes")
    ap.add_argument(
        "--init-from", type=Path, default=None,
        help="warm start from a bench weight file (<name>.safetensors with its .json card next to "
        "it); the new card records the chain of runs",
    )
    ap.add_argument("--measure-only", action="store_true",
                    help="train nothing: measure <out>/<model>.safetensors on the held-out sets again "
                    "(--eval-n, --eval-two-n, --eval-seed) and write the numbers into its card")
    ap.add_argument(
        "--time-limit-min", type=float, default=None,
        help="wall-clock budget: training progress (lr schedule, curriculum) becomes "
        "max(step/steps, elapsed/limit) and training stops at 1, so a slow (shared) machine "
        "still ends annealed; the card records the steps actually run. Runs that hit the "
        "limit are not step-for-step reproducible.",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.measure_only:
        return measure(args)
    recipe = dict(RECIPES[args.model]) if args.recipe is None else {**_BASE, **args.recipe}
    for k in recipe:
        if getattr(args, k, None) is not None:
            recipe[k] = getattr(args, k)
    if args.no_base and "base" in recipe:
        recipe["base"] = None
    base = recipe.get("base")
    if base is not None and args.init_from is None:
        # The recipe continues a base run: train that first, its own card and weights in
        # <out>/<model>-base/, or reuse a base run already there that was trained with this recipe.
        base_out = args.out / f"{args.model}-base"
        base_file = base_out / f"{args.model}.safetensors"
        kwargs = json.loads(json.dumps({**ARCHITECTURES[args.model]["kwargs"], **args.arch}))
        card_file = base_file.with_suffix(".json")
        done = json.loads(card_file.read_text()) if card_file.is_file() else None
        if done is not None and recipe_of(done, base) == base and done["kwargs"] == kwargs:
            print(f"[{args.model}] reusing the base run in {base_out} (trained with this recipe's base)", flush=True)
        else:
            base_argv = ["--model", args.model, "--out", str(base_out), "--threads", str(args.threads),
                         "--seed", str(args.seed), "--log-every", str(args.log_every), "--eval-n",
                         str(args.eval_n), "--eval-two-n", str(args.eval_two_n), "--eval-seed", str(args.eval_seed),
                         "--no-base", "--recipe", json.dumps(base)]
            if args.arch:
                base_argv += ["--arch", json.dumps(args.arch)]
            if args.checkpoint is not None:
                base_argv += ["--checkpoint", str(args.checkpoint.with_name(args.checkpoint.name + ".base")),
                              "--checkpoint-every", str(args.checkpoint_every)]
            print(f"[{args.model}] base run first: {shlex.join(base_argv)}", flush=True)
            main(base_argv)
        args.init_from = base_file
    if recipe["kd_weight"] > 0 and recipe["teacher"] is None:
        ap.error("--kd-weight > 0 needs --teacher")
    f = recipe["two_object_fraction"]
    if f is not None and not 0.0 <= f <= 1.0:
        ap.error("--two-object-fraction must be in [0, 1]")
    steps, batch = recipe["steps"], recipe["batch"]

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    arch = ARCHITECTURES[args.model]
    arch = {**arch, "kwargs": {**arch["kwargs"], **args.arch}}
    model = build(arch["timm_class"], arch["kwargs"])
    n_params = sum(p.numel() for p in model.parameters())
    # Start the head at the label prior (mean objects per image / classes) so the first steps
    # are not spent learning the base rate.
    prior = (1.5 if f is None else 1 + f) / NUM_CLASSES
    with torch.no_grad():
        model.get_classifier().bias.fill_(math.log(prior / (1 - prior)))
    if recipe["pos_embed_init"] == "sincos":
        init_sincos_pos_embed(model)
    parent = None
    if args.init_from is not None:
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(str(args.init_from)).items()})
        parent = json.loads(args.init_from.with_suffix(".json").read_text())
        if parent["kwargs"] != json.loads(json.dumps(arch["kwargs"])):
            ap.error("--init-from card has different architecture kwargs")
        if base is not None and recipe_of(parent, base) != base:
            print(f"[{args.model}] warning: {args.init_from} was not trained with this recipe's base "
                  f"{base} (its recipe: {recipe_of(parent, base)})", flush=True)
    # A warm-started run continues the parent's seed stream instead of revisiting its images.
    seed_offset = 0 if parent is None else _seeds_used(parent)
    last_seed = TRAIN_SEED_BASE + seed_offset + steps - 1
    ranges = [(TRAIN_SEED_BASE + seed_offset, last_seed)]
    if f is not None:
        ranges.append((ranges[0][0] + ONE_OBJECT_SEED_OFFSET, last_seed + ONE_OBJECT_SEED_OFFSET))
    if any(lo <= s <= hi for lo, hi in ranges for s in (args.eval_seed, MONITOR_SEED)):
        ap.error(f"a held-out seed lies in the training seed ranges {ranges}")
    if f is not None and seed_offset + steps > ONE_OBJECT_SEED_OFFSET:
        ap.error(f"two-object and one-object seed ranges would overlap beyond {ONE_OBJECT_SEED_OFFSET} steps")

    teacher, teacher_card = (None, None) if recipe["teacher"] is None else load_bundled(recipe["teacher"])
    # Token labelling: an auxiliary linear head (discarded after training) reads every patch token.
    token_head = None
    if recipe["token_label_weight"] > 0:
        token_head = torch.nn.Linear(model.num_features, NUM_CLASSES)
    trained = list(model.parameters()) + ([] if token_head is None else list(token_head.parameters()))
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe["lr"], betas=(0.9, recipe["beta2"]),
    )
    ema = copy.deepcopy(model).eval() if recipe["ema"] > 0 else None
    stats = None
    if recipe["normalize"]:
        if parent is not None:
            ap.error("--normalize cannot continue from --init-from: the parent's stem already holds its folded "
                     "normalisation and takes raw images; pass --no-normalize")
        stem_conv(model)  # fail before training, not after
        stats = tuple(t.view(1, -1, 1, 1) for t in input_stats())
    print(f"[{args.model}] {arch['timm_class']} {n_params / 1e6:.2f}M params, recipe {recipe}"
          + (f", input mean {stats[0].flatten().tolist()} std {stats[1].flatten().tolist()}" if stats else ""),
          flush=True)

    start, prev_s, prev_cpu = 0, 0.0, 0.0
    if args.checkpoint is not None and args.checkpoint.is_file():
        ck = torch.load(args.checkpoint, weights_only=False)
        if ck["recipe"] != recipe or ck["kwargs"] != arch["kwargs"]:
            ap.error(f"checkpoint {args.checkpoint} belongs to a different run (recipe or architecture)")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        if token_head is not None:
            token_head.load_state_dict(ck["token_head"])
        start, prev_s, prev_cpu = ck["step"], ck["train_seconds"], ck["train_cpu_seconds"]
        print(f"[{args.model}] resumed from {args.checkpoint} at step {start} ({prev_s:.0f}s trained)", flush=True)

    monitor = two_object_heldout(200, seed=MONITOR_SEED) if args.monitor_every else None
    t0, c0 = time.time(), time.process_time()
    run_loss, run_acc = 0.0, 0.0
    model.train()
    limit_s = args.time_limit_min * 60 if args.time_limit_min else None
    steps_run, time_bound = start, False

    def save_checkpoint(step: int) -> None:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "ema": None if ema is None else ema.state_dict(), "step": step, "recipe": recipe,
                    "token_head": None if token_head is None else token_head.state_dict(),
                    "kwargs": arch["kwargs"],
                    "train_seconds": prev_s + time.time() - t0,
                    "train_cpu_seconds": prev_cpu + time.process_time() - c0}, tmp)
        tmp.replace(args.checkpoint)

    stop = steps if args.pause_after is None else min(steps, start + args.pause_after)
    if args.pause_after is not None and args.checkpoint is None:
        ap.error("--pause-after needs --checkpoint")
    for step in range(start, stop):
        progress = step / steps
        if limit_s is not None:
            tp = (prev_s + time.time() - t0) / limit_s
            if tp >= 1.0:
                time_bound = True
                break
            progress = max(progress, tp)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress, recipe["lr"], recipe["warmup"])
        clutter = clutter_at(progress, recipe["clutter_start"], recipe["clutter_ramp"])
        data = training_batch(seed_offset + step, batch, clutter, f)
        images, labels = data.images, data.labels
        x = images if stats is None else (images - stats[0]) / stats[1]
        if token_head is None:
            logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        else:
            feats = model.forward_features(x)
            logits = model.forward_head(feats)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            w = recipe["token_label_weight"]
            loss = loss + w * token_label_loss(token_head, feats, data.masks, prefix_tokens(model))
        if teacher is not None and recipe["kd_weight"] > 0:
            with torch.no_grad():
                t_logits = teacher(images)
            w = recipe["kd_weight"]
            loss = (1 - w) * loss + w * kd_loss(logits, t_logits, recipe["kd_temperature"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        if ema is not None:
            ema_update(ema, model, recipe["ema"], step)
        steps_run = step + 1
        run_loss = 0.95 * run_loss + 0.05 * loss.item() if step > start else loss.item()
        exact = ((logits > 0) == (labels > 0.5)).all(1).float().mean().item()
        run_acc = 0.95 * run_acc + 0.05 * exact if step > start else exact
        if (step + 1) % args.log_every == 0 or step + 1 == steps:
            el = prev_s + time.time() - t0
            print(
                f"[{args.model}] step {step + 1}/{steps} loss {run_loss:.4f} train-exact {run_acc:.3f} "
                f"lr {opt.param_groups[0]['lr']:.2e} clutter {clutter:.2f} {el:.0f}s (progress {progress:.2f})",
                flush=True,
            )
        if monitor is not None and (step + 1) % args.monitor_every == 0:
            watched = ema if ema is not None else model.eval()
            with torch.no_grad():
                rep = detection(lambda x: watched(x if stats is None else (x - stats[0]) / stats[1]), monitor)
            model.train()
            print(f"[{args.model}] monitor step {step + 1}: two-object recall {rep['object_recall']:.3f} "
                  f"exact {rep['exact_match']:.3f}", flush=True)
        if args.checkpoint is not None and (step + 1) % args.checkpoint_every == 0:
            save_checkpoint(step + 1)
    train_s = prev_s + time.time() - t0
    train_cpu_s = prev_cpu + time.process_time() - c0
    if args.checkpoint is not None and steps_run > start:
        save_checkpoint(steps_run)
    if steps_run < steps and not time_bound:
        print(f"[{args.model}] paused at step {steps_run}; run the same command again to resume", flush=True)
        return 0

    final = ema if ema is not None else model
    if stats is not None:
        fold_normalisation(final, stats[0].flatten(), stats[1].flatten())
    # Ship float16 and evaluate exactly what ships.
    state16 = {k: v.detach().to(torch.float16).contiguous() for k, v in final.state_dict().items()}
    final.load_state_dict({k: v.float() for k, v in state16.items()})
    final.eval()
    rep = evaluate(final, generate(args.eval_n, seed=args.eval_seed))
    two = detection(final, two_object_heldout(args.eval_two_n, seed=args.eval_seed))
    print(f"[{args.model}] held-out ({args.eval_n} images, seed {args.eval_seed}): "
          f"mean per-class acc {rep['mean_per_class_accuracy']:.4f}, exact match {rep['exact_match']:.4f}, "
          f"balanced {rep['mean_balanced_accuracy']:.4f}", flush=True)
    print(f"[{args.model}] held-out two-object ({args.eval_two_n} images): object recall "
          f"{two['object_recall']:.4f}, exact set {two['exact_match']:.4f}", flush=True)
    print(f"[{args.model}] per-class: {rep['per_class_accuracy']}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    wpath = args.out / f"{args.model}.safetensors"
    save_file(state16, str(wpath), metadata={"format": "pt", "model": args.model})
    card = {
        "name": args.model,
        "command": "python tools/train_bench_models.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "description": "Multi-label shape classifier (logits) for libragrad_fx.bench.data images, "
        "(n,3,64,64) in [0,1], no input normalisation" + ("" if stats is None else
        " (the standardisation it was trained with is folded into its stem)") + ".",
        "timm_class": arch["timm_class"],
        "kwargs": arch["kwargs"],
        "params": n_params,
        "dtype_stored": "float16",
        "init_seed": args.seed,
        "loss": "BCEWithLogits over the classes" + ("" if teacher is None else
                f", mixed with distillation from the teacher's sigmoids (weight {recipe['kd_weight']}, "
                f"temperature {recipe['kd_temperature']})")
        + ("" if token_head is None else
           f"; plus {recipe['token_label_weight']} x token labelling (an auxiliary linear head on the final patch "
           "tokens, discarded after training, predicts each 8x8 patch's share of every object mask; BCE)"),
        "optimizer": "AdamW (beta1 0.9; no weight decay on biases/norms/1-d params), grad clip 1.0"
        + ("" if ema is None else f"; the shipped weights are the EMA (decay {recipe['ema']})"),
        "schedule": "linear warmup then cosine to 2% of lr",
        "head_bias_init": f"log(p/(1-p)), p = {1.5 if f is None else 1 + f}/C (label prior)",
        "input_normalisation": None if stats is None else {
            "trained_on": "(x - mean) / std per channel, folded into the stem convolution after training",
            "mean": [round(v, 6) for v in stats[0].flatten().tolist()],
            "std": [round(v, 6) for v in stats[1].flatten().tolist()],
        },
        **recipe,
        "teacher_card": None if teacher is None else {
            k: teacher_card.get(k) for k in ("timm_class", "command", "train_seconds", "train_cpu_seconds",
                                             "heldout_two_objects")
        },
        "train_data": describe_data(batch, seed_offset, steps_run, recipe),
        "steps_run": steps_run,
        "stopped_by_time_limit": time_bound,
        "time_limit_min": args.time_limit_min,
        "images_seen": steps_run * batch,
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu_s, 1),
        "train_threads": args.threads,
        "train_host": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "heldout": {"seed": args.eval_seed, "two_objects": "mixed", "clutter": 1.0, **rep},
        "heldout_two_objects": {"seed": args.eval_seed, "two_objects": True, "clutter": 1.0, **two},
        "weights_bytes": wpath.stat().st_size,
        "init_from": None if parent is None else {
            k: parent.get(k) for k in ("command", "steps", "steps_run", "batch", "lr", "train_seconds",
                                       "train_cpu_seconds", "train_data", "init_from")
        },
    }
    (args.out / f"{args.model}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"[{args.model}] trained in {train_s:.0f}s wall, {train_cpu_s:.0f}s CPU; wrote {wpath} "
          f"({wpath.stat().st_size / 1e6:.2f} MB) and card", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
