"""Train the bundled CLIP (``libragrad_fx.bench.models.load("clip")``) and write weights + model card.

    python tools/train_clip.py --out libragrad_fx/bench/weights

Locked-image tuning (LiT, Zhai et al. 2022): the image tower is the bundled EVA02 classifier's body
(``--init-visual``; its classification head replaced by a new projection), held fixed, and the
projection, the text tower and the temperature are trained contrastively. The body's pooled features
of a pool of ``pool`` generated images are computed once; every step draws ``batch`` of them and one
random caption per image (:func:`libragrad_fx.bench.captions.sample`, seeded by the step), and the ten
class prompts ("a star", "an arrow"...) join the batch's texts. The loss is CLIP's symmetric
cross-entropy over ``scale * cos`` with every text that is true of an image counted as its positive
(targets uniform over them), since texts repeat within a batch ("a star" is true of every image holding
a star). ``--finetune-steps`` then trains everything, the body too, on fresh images.

Held out: zero-shot classification by prompt (the class prompts, argmax of the cosine) on ``eval_n``
one-object images of ``HELDOUT_SEED``; on as many two-object images, whether the two best prompts are
the two objects; colour and position words (:func:`libragrad_fx.bench.clip.zero_shot_report`). Measured
on the float16 weights that ship. ``--checkpoint FILE`` saves the run every few minutes and resumes
from FILE when it exists (the data depend only on the step, so a resumed run continues the same stream).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libragrad_fx.bench import captions  # noqa: E402
from libragrad_fx.bench.clip import zero_shot_report  # noqa: E402
from libragrad_fx.bench.clip_model import build  # noqa: E402
from libragrad_fx.bench.data import HELDOUT_SEED, TRAIN_SEED_BASE, generate, objects  # noqa: E402


def _bench_trainer():
    """tools/train_bench_models.py (its learning-rate schedule)."""
    spec = importlib.util.spec_from_file_location("train_bench_models", ROOT / "tools" / "train_bench_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POOL_SEED = TRAIN_SEED_BASE + 500_000
"""The pool's chunk i is ``generate(CHUNK, seed=POOL_SEED + i)``: training seeds the classifiers never drew."""
FINETUNE_SEED = TRAIN_SEED_BASE + 600_000
"""Fine-tuning step s draws ``generate(finetune_batch, seed=FINETUNE_SEED + s)``."""
CAPTION_SEED = 7_000_001
"""Step s of the locked phase draws its images and captions from ``default_rng([CAPTION_SEED, s])``, step s of
fine-tuning its captions from ``default_rng([CAPTION_SEED, 1, s])``."""
CHUNK = 512
EMBED_DIM = 64
TEXT = dict(vocab=list(captions.WORDS), context=16, width=64, depth=2, heads=4, embed_dim=EMBED_DIM)
RECIPE = dict(pool=8192, steps=600, batch=256, lr=2e-3, wd=0.05, warmup=100, beta2=0.98, p_colour=0.5,
              p_position=0.5, p_one_of_two=0.2, p_shape_word=0.1, finetune_steps=0, finetune_batch=64,
              finetune_lr=1e-4)


def contrastive_loss(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of ``logits`` [images, texts] against targets uniform over each row's (column's)
    positives; texts true of no image in the batch (an absent class's prompt) are left out of the text side."""
    rows = positive.float() / positive.sum(1, keepdim=True)
    image_side = -(rows * logits.log_softmax(1)).sum(1).mean()
    has = positive.any(0)
    cols = positive[:, has].float() / positive[:, has].sum(0, keepdim=True)
    text_side = -(cols * logits[:, has].log_softmax(0)).sum(0).mean()
    return (image_side + text_side) / 2


def texts_for(truth: captions.Specs, rng: np.random.Generator, recipe: dict) -> tuple[list[str], torch.Tensor]:
    """(one random caption per image, then the class prompts; positives [images, texts])."""
    specs = captions.sample(truth, rng, p_colour=recipe["p_colour"], p_position=recipe["p_position"],
                            p_one_of_two=recipe["p_one_of_two"], p_shape_word=recipe["p_shape_word"])
    classes = captions.specs_of_classes(torch.arange(len(captions.class_prompts())))
    texts = captions.caption_text(specs) + captions.class_prompts()
    return texts, torch.cat([captions.true_of(specs, truth), captions.true_of(classes, truth)]).T


def pooled(visual: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The image tower's features before its projection (timm's pre-logits)."""
    return visual.forward_head(visual.forward_features(images), pre_logits=True)


@torch.no_grad()
def feature_pool(visual: torch.nn.Module, n: int) -> tuple[torch.Tensor, captions.Specs]:
    """The locked body's features of ``n`` training images and what the images hold."""
    feats, truths = [], []
    for i in range(n // CHUNK):
        feats.append(pooled(visual, generate(CHUNK, seed=POOL_SEED + i).images))
        truths.append(captions.describe(objects(CHUNK, seed=POOL_SEED + i)))
    cat = lambda key: torch.cat([getattr(t, key) for t in truths])  # noqa: E731
    return torch.cat(feats), captions.Specs(cat("shape"), cat("colour"), cat("position"))


def _optimizer(params: list[torch.nn.Parameter], recipe: dict, lr: float) -> torch.optim.AdamW:
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe["wd"]},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, recipe["beta2"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for clip.safetensors / clip.json")
    ap.add_argument("--init-visual", type=Path, default=ROOT / "libragrad_fx" / "bench" / "weights" / "eva02.safetensors",
                    help="the image tower's body: a bundled classifier's weights (its .json card next to it)")
    for key, value in RECIPE.items():
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, type=type(value), default=value)
    ap.add_argument("--seed", type=int, default=0, help="torch seed for init")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--checkpoint", type=Path, help="save the run here every --checkpoint-min minutes; resume "
                    "from it when it exists")
    ap.add_argument("--checkpoint-min", type=float, default=3.0)
    args = ap.parse_args(argv)
    recipe = {k: getattr(args, k) for k in RECIPE}
    trainer = _bench_trainer()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    parent = json.loads(args.init_visual.with_suffix(".json").read_text())
    visual_spec = {"timm_class": parent["timm_class"], "kwargs": {**parent["kwargs"], "num_classes": EMBED_DIM}}
    spec = {"visual": visual_spec, "text": TEXT}
    model = build(spec)
    body = {k: v.float() for k, v in load_file(str(args.init_visual)).items() if not k.startswith("head.")}
    missing, unexpected = model.visual.load_state_dict(body, strict=False)
    if unexpected or set(missing) != {"head.weight", "head.bias"}:
        ap.error(f"{args.init_visual} does not fit {parent['timm_class']}: missing {missing}, unexpected {unexpected}")
    n_params = sum(p.numel() for p in model.parameters())
    locked = [p for n, p in model.visual.named_parameters() if not n.startswith("head.")]
    tuned = [p for p in model.parameters() if all(p is not q for q in locked)]
    opt = _optimizer(tuned, recipe, recipe["lr"])
    fine_opt = _optimizer(list(model.parameters()), recipe, recipe["finetune_lr"])
    step, wall, cpu, run_loss = 0, 0.0, 0.0, 0.0
    if args.checkpoint is not None and args.checkpoint.exists():
        saved = torch.load(args.checkpoint, weights_only=False)
        if saved["recipe"] != recipe or saved["spec"] != spec:
            ap.error(f"{args.checkpoint} holds a run with another recipe or architecture; remove it or pass "
                     "the same settings")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        fine_opt.load_state_dict(saved["fine_opt"])
        step, wall, cpu, run_loss = (saved[k] for k in ("step", "wall", "cpu", "run_loss"))
        print(f"[clip] resumed {args.checkpoint} at step {step}", flush=True)
    print(f"[clip] {n_params / 1e6:.2f}M params, image tower from {args.init_visual.name}, recipe {recipe}", flush=True)

    t0, c0, saved_at = time.time() - wall, time.process_time() - cpu, time.time()
    model.eval()  # the locked body's features are computed in eval mode (Eva has no dropout to switch)
    with torch.no_grad():
        feats, truth = feature_pool(model.visual, recipe["pool"]) if step < recipe["steps"] else (None, None)
    if feats is not None:
        print(f"[clip] features of {len(feats)} pool images in {time.time() - t0:.0f}s", flush=True)
    total = recipe["steps"] + recipe["finetune_steps"]
    for step in range(step, total):
        rng = np.random.default_rng([CAPTION_SEED, step])
        if step < recipe["steps"]:  # locked image tower: the pool's features through the new projection
            idx = torch.as_tensor(rng.choice(len(feats), recipe["batch"], replace=False))
            image = model.visual.head(feats[idx])
            sub = captions.Specs(truth.shape[idx], truth.colour[idx], truth.position[idx])
            texts, positive = texts_for(sub, rng, recipe)
            optimizer, progress, base = opt, step / recipe["steps"], recipe["lr"]
        else:
            s = step - recipe["steps"]
            n = recipe["finetune_batch"]
            image = model.encode_image(generate(n, seed=FINETUNE_SEED + s).images)
            texts, positive = texts_for(captions.describe(objects(n, seed=FINETUNE_SEED + s)),
                                        np.random.default_rng([CAPTION_SEED, 1, s]), recipe)
            optimizer, progress, base = fine_opt, s / recipe["finetune_steps"], recipe["finetune_lr"]
        for g in optimizer.param_groups:
            g["lr"] = trainer.lr_at(step if optimizer is opt else step - recipe["steps"], progress, base,
                                    recipe["warmup"])
        text = model.encode_text(texts)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
        loss = contrastive_loss(logits, positive)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        run_loss = 0.95 * run_loss + 0.05 * loss.item() if step else loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == total:
            one = positive[:, -10:].sum(1) == 1  # one-object images: is the best class prompt theirs?
            acc = (positive[:, -10:].float().argmax(1) == logits[:, -10:].argmax(1))[one].float().mean().item()
            print(f"[clip] step {step + 1}/{total} loss {run_loss:.4f} batch one-object acc {acc:.3f} "
                  f"scale {scale.item():.1f} lr {optimizer.param_groups[0]['lr']:.2e} {time.time() - t0:.0f}s",
                  flush=True)
        if args.checkpoint is not None and (time.time() - saved_at > 60 * args.checkpoint_min or step + 1 == total):
            tmp = args.checkpoint.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "fine_opt": fine_opt.state_dict(),
                        "step": step + 1, "wall": time.time() - t0, "cpu": time.process_time() - c0,
                        "run_loss": run_loss, "recipe": recipe, "spec": spec}, tmp)
            tmp.replace(args.checkpoint)
            saved_at = time.time()
    train_s, train_cpu_s = time.time() - t0, time.process_time() - c0

    state16 = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in state16.items()})
    model.eval()
    report = zero_shot_report(model, args.eval_n, HELDOUT_SEED)
    print(f"[clip] held-out zero-shot: {json.dumps({k: v for k, v in report.items() if k != 'prompts'})}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    wpath = args.out / "clip.safetensors"
    save_file(state16, str(wpath), metadata={"format": "pt", "model": "clip"})
    digest = hashlib.sha256(args.init_visual.read_bytes()).hexdigest()
    card = {
        "name": "clip",
        "kind": "clip",
        "command": "python tools/train_clip.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "description": "CLIP-style image-text model for libragrad_fx.bench.data images, (n,3,64,64) in [0,1], no "
        "input normalisation; prompts over the word list text.vocab. encode_image / encode_text give the "
        "projected embeddings; the similarity is their cosine.",
        **spec,
        "params": n_params,
        "dtype_stored": "float16",
        "init_seed": args.seed,
        "image_tower": {"from": args.init_visual.name, "sha256": digest, "command": parent.get("command"),
                        "note": "the classifier's body, its head replaced by the projection; locked for the first "
                        f"{recipe['steps']} steps, trained with the rest for the {recipe['finetune_steps']} after"},
        "loss": "symmetric cross-entropy over scale * cos(image, text), targets uniform over every text true of "
        "the image (libragrad_fx.bench.captions.true_of); learned scale, init 1/0.07, at most 100",
        "optimizer": "AdamW (beta1 0.9; no weight decay on biases/norms/1-d params), grad clip 1.0",
        "schedule": "linear warmup then cosine to 2% of lr (each phase)",
        **recipe,
        "train_data": f"locked phase: the body's features of generate({CHUNK}, seed={POOL_SEED} + i) for i in "
        f"range({recipe['pool'] // CHUNK}) (clutter 1.0, mixed one/two objects); step s draws {recipe['batch']} of "
        f"them and their captions from default_rng([{CAPTION_SEED}, s]) (captions.sample), plus the ten class "
        f"prompts; fine-tuning step s: generate({recipe['finetune_batch']}, seed={FINETUNE_SEED} + s)",
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
