"""Score a few methods with the zero and with the mean-colour deletion baseline on one bundled model.

    python tools/deletion_baseline_check.py vit 100

Checks whether a method's SRG lead depends on the deletion baseline matching its own (Integrated
Gradients integrates from the zero image, the benchmark deletes patches to zero).
"""
from __future__ import annotations

import argparse

import torch

from libragrad_fx.bench import faithfulness as fb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("n", type=int, help="images")
    ap.add_argument("--methods", default="ig,fullgrad,gae")
    ap.add_argument("--ig-steps", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    methods = fb.resolve_methods(args.methods.split(","))
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for baseline in ("zero", "mean"):
        config = fb.Config(n=args.n, ig_steps=args.ig_steps, baseline=baseline)
        result = fb.run_model(args.model, methods, config, examples=0)
        for row in result.rows:
            scores.setdefault((row["method"], row["variant"]), {})[baseline] = row["prob_srg"]
    print(f"{args.model}, {args.n} images: SRG with patches deleted to zero / to the image's mean colour")
    for (method, variant), srg in scores.items():
        print(f"  {method:10s} {variant:9s} {srg['zero']:.3f} / {srg['mean']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
