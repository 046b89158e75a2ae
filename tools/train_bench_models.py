"""Train a bundled bench model on freshly generated images and write weights + model card.

    python tools/train_bench_models.py --model vit --out libragrad_fx/bench/weights

Every step draws a new batch ``generate(batch, seed=TRAIN_SEED_BASE + step)`` (infinite data,
so no augmentation or epochs are needed); the held-out set is ``generate(eval_n,
seed=HELDOUT_SEED)``, a seed never used for training. Weights are stored as float16
safetensors and the reported held-out accuracy is measured on those float16 weights.
"""

from __future__ import annotations

import argparse
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

from libragrad_fx.bench.data import CLASSES, HELDOUT_SEED, TRAIN_SEED_BASE, generate  # noqa: E402
from libragrad_fx.bench.evaluate import evaluate  # noqa: E402
from libragrad_fx.bench.models import ARCHITECTURES, build  # noqa: E402

# Per-model recipe defaults: the shipped weights' recipes, each run < 15 min wall on 2 CPU
# cores (~0.3 s per batch-64 step including rendering). Clutter rises from 0 (plain
# backgrounds) to the benchmark's 1.0 over the first half of training. The ViT and the Mixer
# train on standardised images (folded into the stem afterwards): on the raw [0, 1] images
# every token shares a large common component and both stalled below the accuracy target.
_BASE = dict(batch=64, lr=1e-3, wd=0.05, warmup=50, beta2=0.999, clutter_start=0.0, clutter_ramp=0.5)
RECIPES: dict[str, dict] = {
    "vit": dict(_BASE, steps=2500, normalize=True, pos_embed_init="sincos"),
    "eva02": dict(_BASE, steps=2000, normalize=False, pos_embed_init="default"),
    "mixer": dict(_BASE, steps=2600, normalize=True, pos_embed_init="default"),
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


def _seeds_used(card: dict) -> int:
    """Number of training seeds consumed by a card's run and its warm-start ancestors."""
    own = card.get("steps_run", card["steps"])
    return own + (_seeds_used(card["init_from"]) if card.get("init_from") else 0)


def main(argv: list[str] | None = None) -> int:
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
    ap.add_argument("--seed", type=int, default=0, help="torch seed for init")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--eval-seed", type=int, default=HELDOUT_SEED)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument(
        "--init-from", type=Path, default=None,
        help="warm start from a bench weight file (<name>.safetensors with its .json card next to "
        "it); the new card records the chain of runs",
    )
    ap.add_argument(
        "--time-limit-min", type=float, default=None,
        help="wall-clock budget: training progress (lr schedule, curriculum) becomes "
        "max(step/steps, elapsed/limit) and training stops at 1, so a slow (shared) machine "
        "still ends annealed; the card records the steps actually run. Runs that hit the "
        "limit are not step-for-step reproducible.",
    )
    args = ap.parse_args(argv)
    recipe = dict(RECIPES[args.model])
    for k in recipe:
        if getattr(args, k) is not None:
            recipe[k] = getattr(args, k)
    steps, batch = recipe["steps"], recipe["batch"]
    train_seeds = (TRAIN_SEED_BASE, TRAIN_SEED_BASE + steps - 1)
    if train_seeds[0] <= args.eval_seed <= train_seeds[1]:
        ap.error(f"eval seed {args.eval_seed} lies in the training seed range {train_seeds}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    arch = ARCHITECTURES[args.model]
    arch = {**arch, "kwargs": {**arch["kwargs"], **args.arch}}
    model = build(arch["timm_class"], arch["kwargs"])
    n_params = sum(p.numel() for p in model.parameters())
    # Start the head at the label prior (each class is present in ~15% of images) so the
    # first steps are not spent learning the base rate.
    prior = 1.5 / len(CLASSES)
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
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe["lr"], betas=(0.9, recipe["beta2"]),
    )
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

    t0, c0 = time.time(), time.process_time()
    run_loss, run_acc = 0.0, 0.0
    model.train()
    # A warm-started run continues the parent's seed stream instead of revisiting its images.
    seed_offset = 0 if parent is None else _seeds_used(parent)
    limit_s = args.time_limit_min * 60 if args.time_limit_min else None
    steps_run, time_bound = 0, False
    for step in range(steps):
        progress = step / steps
        if limit_s is not None:
            tp = (time.time() - t0) / limit_s
            if tp >= 1.0:
                time_bound = True
                break
            progress = max(progress, tp)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress, recipe["lr"], recipe["warmup"])
        clutter = clutter_at(progress, recipe["clutter_start"], recipe["clutter_ramp"])
        data = generate(batch, seed=TRAIN_SEED_BASE + seed_offset + step, clutter=clutter)
        images, labels = data.images, data.labels
        logits = model(images if stats is None else (images - stats[0]) / stats[1])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_run = step + 1
        run_loss = 0.95 * run_loss + 0.05 * loss.item() if step else loss.item()
        exact = ((logits > 0) == (labels > 0.5)).all(1).float().mean().item()
        run_acc = 0.95 * run_acc + 0.05 * exact if step else exact
        if (step + 1) % args.log_every == 0 or step + 1 == steps:
            el = time.time() - t0
            print(
                f"[{args.model}] step {step + 1}/{steps} loss {run_loss:.4f} train-exact {run_acc:.3f} "
                f"lr {opt.param_groups[0]['lr']:.2e} clutter {clutter:.2f} {el:.0f}s (progress {progress:.2f})",
                flush=True,
            )
    train_s = time.time() - t0
    train_cpu_s = time.process_time() - c0

    if stats is not None:
        fold_normalisation(model, stats[0].flatten(), stats[1].flatten())
    # Ship float16 and evaluate exactly what ships.
    state16 = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in state16.items()})
    model.eval()
    held = generate(args.eval_n, seed=args.eval_seed)
    rep = evaluate(model, held)
    print(f"[{args.model}] held-out ({args.eval_n} images, seed {args.eval_seed}): "
          f"mean per-class acc {rep['mean_per_class_accuracy']:.4f}, exact match {rep['exact_match']:.4f}, "
          f"balanced {rep['mean_balanced_accuracy']:.4f}", flush=True)
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
        "loss": "BCEWithLogits over the classes",
        "optimizer": "AdamW (beta1 0.9; no weight decay on biases/norms/1-d params), grad clip 1.0",
        "schedule": "linear warmup then cosine to 2% of lr",
        "head_bias_init": "log(p/(1-p)), p = 1.5/C (label prior)",
        "input_normalisation": None if stats is None else {
            "trained_on": "(x - mean) / std per channel, folded into the stem convolution after training",
            "mean": [round(v, 6) for v in stats[0].flatten().tolist()],
            "std": [round(v, 6) for v in stats[1].flatten().tolist()],
        },
        **recipe,
        "train_data": f"generate({batch}, seed=TRAIN_SEED_BASE + {seed_offset} + step, clutter=c(step)) "
        f"for step in range({steps_run}), TRAIN_SEED_BASE={TRAIN_SEED_BASE}, two_objects=None (mixed); c rises linearly "
        f"from {recipe['clutter_start']} to 1.0 over the first {recipe['clutter_ramp']:.0%} of steps",
        "steps_run": steps_run,
        "stopped_by_time_limit": time_bound,
        "time_limit_min": args.time_limit_min,
        "images_seen": steps_run * batch,
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu_s, 1),
        "train_threads": args.threads,
        "train_host": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "heldout": {"seed": args.eval_seed, "two_objects": "mixed", "clutter": 1.0, **rep},
        "weights_bytes": wpath.stat().st_size,
        "init_from": None if parent is None else {
            k: parent.get(k) for k in ("command", "steps", "steps_run", "batch", "lr", "train_seconds",
                                       "train_cpu_seconds", "train_data", "init_from")
        },
    }
    (args.out / f"{args.model}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"[{args.model}] trained in {train_s:.0f}s wall, {train_cpu_s:.0f}s CPU; wrote {wpath} ({wpath.stat().st_size / 1e6:.2f} MB) and card",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
