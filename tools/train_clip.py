"""Train the bundled CLIP (``libragrad_fx.bench.models.load("clip")``) and write weights + model card.

    python tools/train_clip.py --out libragrad_fx/bench/weights

Every step draws a new batch ``generate(batch, seed=TRAIN_SEED_BASE + step)`` and one random caption
per image (:func:`libragrad_fx.bench.captions.sample`, seeded by the step); the ten class prompts
("a star", "an arrow"...) join the batch's texts. The loss is CLIP's symmetric cross-entropy over
``scale * cos`` with every caption that is true of an image counted as its positive (the target is
uniform over them), since captions repeat within a batch ("a star" is true of every image holding a
star). Images are standardised per channel for training and the standardisation is folded into the
patch embedding afterwards, as for the bundled classifiers.

Held out: zero-shot classification by prompt (the class prompts, argmax of the cosine) on ``eval_n``
one-object images of ``HELDOUT_SEED``, plus, on as many two-object images, whether the two best
prompts are the two objects, and colour and position words. Measured on the float16 weights that
ship. ``--checkpoint FILE`` saves the run every few minutes and resumes from FILE when it exists (the
data depend only on the step, so a resumed run continues the same stream).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libragrad_fx.bench import captions  # noqa: E402
from libragrad_fx.bench.clip_model import build  # noqa: E402
from libragrad_fx.bench.data import HELDOUT_SEED, TRAIN_SEED_BASE, generate, objects  # noqa: E402


def _bench_trainer():
    """tools/train_bench_models.py (the curriculum, schedule and normalisation folding shared with it)."""
    spec = importlib.util.spec_from_file_location("train_bench_models", ROOT / "tools" / "train_bench_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CAPTION_SEED = 7_000_001
"""Seeds the captions of step s with ``default_rng([CAPTION_SEED, s])``."""

EMBED_DIM = 64
VISUAL = {
    "timm_class": "timm.models.vision_transformer.VisionTransformer",
    "kwargs": dict(img_size=64, patch_size=8, in_chans=3, num_classes=EMBED_DIM, embed_dim=128, depth=4,
                   num_heads=4, mlp_ratio=4.0, qkv_bias=True, class_token=False, global_pool="avg"),
}
TEXT = dict(vocab=list(captions.WORDS), context=16, width=64, depth=2, heads=4, embed_dim=EMBED_DIM)
RECIPE = dict(steps=2500, batch=64, lr=1e-3, wd=0.05, warmup=100, beta2=0.98, clutter_start=0.0,
              clutter_ramp=0.5, p_colour=0.5, p_position=0.5, p_one_of_two=0.2, p_shape_word=0.1)


def contrastive_loss(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of ``logits`` [images, texts] against targets uniform over each row's (column's)
    positives; texts true of no image in the batch (an absent class's prompt) are left out of the text side."""
    rows = positive.float() / positive.sum(1, keepdim=True)
    image_side = -(rows * logits.log_softmax(1)).sum(1).mean()
    has = positive.any(0)
    cols = positive[:, has].float() / positive[:, has].sum(0, keepdim=True)
    text_side = -(cols * logits[:, has].log_softmax(0)).sum(0).mean()
    return (image_side + text_side) / 2


def batch_at(step: int, recipe: dict, clutter: float) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """(images, texts: one caption per image then the class prompts, positives [images, texts])."""
    batch = recipe["batch"]
    data = generate(batch, seed=TRAIN_SEED_BASE + step, clutter=clutter)
    truth = captions.describe(objects(batch, seed=TRAIN_SEED_BASE + step, clutter=clutter))
    specs = captions.sample(truth, np.random.default_rng([CAPTION_SEED, step]), p_colour=recipe["p_colour"],
                            p_position=recipe["p_position"], p_one_of_two=recipe["p_one_of_two"],
                            p_shape_word=recipe["p_shape_word"])
    classes = captions.specs_of_classes(torch.arange(len(captions.class_prompts())))
    texts = captions.caption_text(specs) + captions.class_prompts()
    positive = torch.cat([captions.true_of(specs, truth), captions.true_of(classes, truth)]).T
    return data.images, texts, positive


@torch.no_grad()
def zero_shot(model, n: int, seed: int) -> dict:
    """Held-out zero-shot accuracies (see the module docstring)."""
    from libragrad_fx.bench.clip import zero_shot_report

    return zero_shot_report(model, n, seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for clip.safetensors / clip.json")
    for key, value in RECIPE.items():
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, type=type(value), default=value)
    ap.add_argument("--seed", type=int, default=0, help="torch seed for init")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--checkpoint", type=Path, help="save the run here every --checkpoint-min minutes; resume "
                    "from it when it exists")
    ap.add_argument("--checkpoint-min", type=float, default=3.0)
    args = ap.parse_args(argv)
    recipe = {k: getattr(args, k) for k in RECIPE}
    trainer = _bench_trainer()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    spec = {"visual": VISUAL, "text": TEXT}
    model = build(spec)
    trainer.init_sincos_pos_embed(model.visual)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe["wd"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe["lr"],
                            betas=(0.9, recipe["beta2"]))
    mean, std = (t.view(1, -1, 1, 1) for t in trainer.input_stats())
    start, wall, cpu, run_loss, run_acc = 0, 0.0, 0.0, 0.0, 0.0
    if args.checkpoint is not None and args.checkpoint.exists():
        saved = torch.load(args.checkpoint, weights_only=False)
        if saved["recipe"] != recipe or saved["spec"] != spec:
            ap.error(f"{args.checkpoint} holds a run with another recipe or architecture; remove it or pass "
                     "the same settings")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        start, wall, cpu, run_loss, run_acc = (saved[k] for k in ("step", "wall", "cpu", "run_loss", "run_acc"))
        print(f"[clip] resumed {args.checkpoint} at step {start}", flush=True)
    print(f"[clip] {n_params / 1e6:.2f}M params, recipe {recipe}", flush=True)

    steps = recipe["steps"]
    t0, c0, saved_at = time.time() - wall, time.process_time() - cpu, time.time()
    model.train()
    for step in range(start, steps):
        progress = step / steps
        for g in opt.param_groups:
            g["lr"] = trainer.lr_at(step, progress, recipe["lr"], recipe["warmup"])
        clutter = trainer.clutter_at(progress, recipe["clutter_start"], recipe["clutter_ramp"])
        images, texts, positive = batch_at(step, recipe, clutter)
        logits = model((images - mean) / std, model.tokenize(texts))
        loss = contrastive_loss(logits, positive)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # class-prompt accuracy on the batch's one-object images
        one = positive[:, -10:].sum(1) == 1
        acc = (positive[:, -10:].float().argmax(1) == logits[:, -10:].argmax(1))[one].float().mean().item()
        run_loss = 0.95 * run_loss + 0.05 * loss.item() if step else loss.item()
        run_acc = 0.95 * run_acc + 0.05 * acc if step else acc
        if (step + 1) % args.log_every == 0 or step + 1 == steps:
            print(f"[clip] step {step + 1}/{steps} loss {run_loss:.4f} one-object acc {run_acc:.3f} "
                  f"scale {model.logit_scale.exp().item():.1f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"clutter {clutter:.2f} {time.time() - t0:.0f}s", flush=True)
        if args.checkpoint is not None and (time.time() - saved_at > 60 * args.checkpoint_min or step + 1 == steps):
            tmp = args.checkpoint.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                        "wall": time.time() - t0, "cpu": time.process_time() - c0, "run_loss": run_loss,
                        "run_acc": run_acc, "recipe": recipe, "spec": spec}, tmp)
            tmp.replace(args.checkpoint)
            saved_at = time.time()
    train_s, train_cpu_s = time.time() - t0, time.process_time() - c0

    trainer.fold_normalisation(model.visual, mean.flatten(), std.flatten())
    state16 = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in state16.items()})
    model.eval()
    report = zero_shot(model, args.eval_n, HELDOUT_SEED)
    print(f"[clip] held-out zero-shot: {json.dumps(report)}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    wpath = args.out / "clip.safetensors"
    save_file(state16, str(wpath), metadata={"format": "pt", "model": "clip"})
    card = {
        "name": "clip",
        "kind": "clip",
        "command": "python tools/train_clip.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "description": "CLIP-style image-text model for libragrad_fx.bench.data images, (n,3,64,64) in [0,1], no "
        "input normalisation (the standardisation it was trained with is folded into the patch embedding); "
        "prompts over the word list text.vocab.",
        **spec,
        "params": n_params,
        "dtype_stored": "float16",
        "init_seed": args.seed,
        "loss": "symmetric cross-entropy over scale * cos(image, text), targets uniform over every text true of "
        "the image (libragrad_fx.bench.captions.true_of); learned scale, init 1/0.07, at most 100",
        "optimizer": "AdamW (beta1 0.9; no weight decay on biases/norms/1-d params), grad clip 1.0",
        "schedule": "linear warmup then cosine to 2% of lr",
        "pos_embed_init": "sincos",
        **recipe,
        "train_data": f"generate({recipe['batch']}, seed=TRAIN_SEED_BASE + step, clutter=c(step)) for step in "
        f"range({steps}), TRAIN_SEED_BASE={TRAIN_SEED_BASE}, mixed one/two objects; c rises linearly from "
        f"{recipe['clutter_start']} to 1.0 over the first {recipe['clutter_ramp']:.0%} of steps; one caption per "
        f"image (captions.sample, default_rng([{CAPTION_SEED}, step])) plus the ten class prompts",
        "input_normalisation": {
            "trained_on": "(x - mean) / std per channel, folded into the patch embedding after training",
            "mean": [round(v, 6) for v in mean.flatten().tolist()],
            "std": [round(v, 6) for v in std.flatten().tolist()],
        },
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu_s, 1),
        "train_threads": args.threads,
        "train_host": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "heldout": {"seed": HELDOUT_SEED, "clutter": 1.0, **report},
        "weights_bytes": wpath.stat().st_size,
    }
    (args.out / "clip.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"[clip] trained in {train_s:.0f}s wall, {train_cpu_s:.0f}s CPU; wrote {wpath} and its card", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
