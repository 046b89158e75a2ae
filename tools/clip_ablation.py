"""Which rule decides how well a prompted map tells the two objects apart? The CLIP benchmark's (image, prompt)
pairs (``libragrad-fx bench --models clip``, same images for the same N), explained by Input x Gradient and
FullGrad under every preset, and by lxt's AttnLRP (uniform rule in attention) and CP-LRP (q and k detached),
scored by discrimination, segmentation AP and pointing.

    python tools/clip_ablation.py [N] [--out docs/bench/clip/ablation.md]

AttnLRP needs a Python with lxt (``LIBRAGRAD_FX_LXT_PYTHON``); without it those rows are left out.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libragrad_fx import attr, metrics  # noqa: E402
from libragrad_fx.bench import models  # noqa: E402
from libragrad_fx.bench.captions import class_prompts  # noqa: E402
from libragrad_fx.bench.clip import readout  # noqa: E402
from libragrad_fx.bench.clip_bench import attnlrp_maps  # noqa: E402
from libragrad_fx.bench.data import HELDOUT_SEED, generate  # noqa: E402
from libragrad_fx.bench.faithfulness import Config, targets_of  # noqa: E402
from libragrad_fx.core.transform import PRESETS, transform  # noqa: E402


def split_ixg(tower: torch.nn.Module, text: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
              rule: bool) -> torch.Tensor:
    """Input x Gradient of cos(tower(x), text[target]), the norm detached when ``rule``; channel sums."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        e = tower(x)
        norm = e.norm(dim=-1, keepdim=True)
        y = ((e / (norm.detach() if rule else norm)) * text[target]).sum()
        (g,) = torch.autograd.grad(y, x)
    return (x * g).sum(1).detach()


def scores(maps: torch.Tensor, rows) -> dict[str, float]:
    disc = metrics.class_discrimination(maps, rows.mask, rows.other, per_area=True)
    return {"disc": float(torch.nanmean(disc["share"])), "disc_rate": float(disc["more_on_a"].mean()),
            "ap": float(torch.nanmean(metrics.segmentation_ap(maps, rows.mask))),
            "point": float(metrics.pointing_game(maps, rows.mask).mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=250, help="two-object images (default 250)")
    ap.add_argument("--out", type=Path, default=Path("docs/bench/clip/ablation.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.process_time()
    model = models.load("clip")
    head = readout(model, class_prompts())
    data = generate(args.n, seed=HELDOUT_SEED, two_objects=True)
    rows = targets_of(data.labels, data.masks)
    x = data.images[rows.image]
    with torch.no_grad():
        sims = head(x).gather(1, rows.target[:, None])[:, 0]
    table = []
    for preset in PRESETS:
        gm = transform(head, x[:1], preset=preset)
        for label, method in (("IxG", attr.InputXGradient(gm)), ("FullGrad", attr.FullGrad(gm))):
            maps = torch.cat([method.attribute(x[i:i + 64], target=rows.target[i:i + 64]).sum(1).detach()
                              for i in range(0, len(x), 64)])
            table.append((label, preset, scores(maps, rows)))
            print(table[-1], flush=True)
    # the final L2 normalisation on its own: Input x Gradient through the tower under one backward and the
    # readout's normalisation under the other (by hand: the rule detaches the norm)
    for tower, final in (("libragrad", "libragrad"), ("libragrad", "vanilla"), ("vanilla", "libragrad")):
        net = transform(model.visual, x[:1], preset=tower)
        maps = torch.cat([split_ixg(net, head.text, x[i:i + 64], rows.target[i:i + 64], final == "libragrad")
                          for i in range(0, len(x), 64)])
        table.append(("IxG", f"tower {tower}, final normalisation {final}", scores(maps, rows)))
        print(table[-1], flush=True)
    for variant, label in (("attnlrp", "AttnLRP (lxt)"), ("cp", "CP-LRP (lxt)")):
        found, note = attnlrp_maps(model, head, variant)("clip", x, rows.target, sims, Config())
        if found is None:
            print(note, flush=True)
            continue
        table.append((label, "-", scores(found[0], rows)))
        print(table[-1], flush=True)
    lines = [f"Prompted maps of the bundled CLIP on {args.n} two-object held-out images ({len(rows.target)} (image, "
             f"prompt) pairs, the pairs of `libragrad-fx bench --models clip --n {args.n}`): discrimination (Disc: "
             "share of the positive mass per pixel on the prompted object; Disc rate: how often it gets more), "
             "segmentation AP and pointing game of the pixel maps. Presets switch one rule family back to the "
             f"vanilla gradient. `python tools/clip_ablation.py {args.n}` ({time.process_time() - start:.0f} s CPU "
             "in this process).", "",
             "| method | preset | Disc ↑ | Disc rate ↑ | AP ↑ | Point ↑ |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {p} | {s['disc']:.3f} | {s['disc_rate']:.3f} | {s['ap']:.3f} | {s['point']:.3f} |"
              for m, p, s in table]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
