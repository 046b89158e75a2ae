"""The attribution numbers (completeness, the per-node check, IG, captum parity) on the eight test-size architectures (random weights, CPU).

    PYTHONPATH=$PWD python tools/attr_report.py [--capture fx|export] [--arch vit ...]

Prints, as markdown: FullGrad completeness (libragrad vs vanilla), the per-node completeness
check of the vanilla and libragrad ViT, Integrated Gradients' sum on the vanilla ViT at 128 steps,
and the parity of captum's InputXGradient / IntegratedGradients on a transformed model with ours.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from archs import ARCHS, build  # noqa: E402

import libragrad_fx as lf  # noqa: E402


def fullgrad_table(archs: list[str], capture: str) -> None:
    print(f"## FullGrad completeness (capture {capture}; |sum - f_t(x)| / |f_t(x)|, worst of the batch)\n")
    print("| architecture | bias sites | libragrad | vanilla |")
    print("|---|---|---|---|")
    for name in archs:
        model, x = build(name)
        row = []
        for preset in ("libragrad", "vanilla"):
            gm = lf.transform(model, x, preset=preset, capture=capture)
            row.append(float(lf.completeness(gm, x).rel_error.max()))
        sites = len(lf.attr.FullGrad(gm).biases(x).sites)
        print(f"| {name} | {sites} | {row[0]:.1e} | {row[1]:.1e} |")
    print()


def node_checks(capture: str) -> None:
    model, x = build("vit")
    print(f"## Per-node completeness check, ViT (capture {capture})\n")
    for preset in ("vanilla", "libragrad"):
        print("```")
        print(lf.node_completeness(lf.transform(model, x, preset=preset, capture=capture), x))
        print("```")
    print()


def integrated_gradients() -> None:
    model, x = build("vit")
    print("## Integrated Gradients on the vanilla ViT, 128 steps (Gauss-Legendre)\n")
    print("| baseline | preset | worst relative error of sum(IG) vs f(x) - f(x') |")
    print("|---|---|---|")
    for label, baselines in (("zeros", None), ("0.5", torch.full_like(x, 0.5))):
        for preset in ("vanilla", "libragrad"):
            result = lf.completeness(model, x, method="integrated_gradients", preset=preset, n_steps=128,
                                     baselines=baselines)
            print(f"| {label} | {preset} | {float(result.rel_error.max()):.1e} |")
    print()


def captum_parity() -> None:
    import captum.attr as captum

    model, x = build("vit")
    target = torch.tensor([1, 3])
    baselines = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    print("## captum on a transformed model vs ours (ViT; max |difference| / max |captum|)\n")
    print("| preset | method | relative max difference |")
    print("|---|---|---|")
    for preset in ("libragrad", "vanilla"):
        gm = lf.transform(model, x, preset=preset)
        ours = lf.attr.InputXGradient(gm).attribute(x, target=target)
        theirs = captum.InputXGradient(gm).attribute(x.clone().requires_grad_(True), target=target).detach()
        print(f"| {preset} | InputXGradient | {float((ours - theirs).abs().max() / theirs.abs().max()):.1e} |")
        for method, batch in (("gausslegendre", None), ("riemann_trapezoid", 6), ("riemann_left", None)):
            ours = lf.attr.IntegratedGradients(gm).attribute(x, baselines, target, n_steps=16, method=method,
                                                             internal_batch_size=batch)
            theirs = captum.IntegratedGradients(gm).attribute(x, baselines, target=target, n_steps=16,
                                                              method=method, internal_batch_size=batch)
            label = f"IntegratedGradients {method}" + (f", internal_batch_size={batch}" if batch else "")
            print(f"| {preset} | {label} | {float((ours - theirs).abs().max() / theirs.abs().max()):.1e} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", default="fx", choices=("fx", "export"))
    parser.add_argument("--arch", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    fullgrad_table(args.arch, args.capture)
    node_checks(args.capture)
    integrated_gradients()
    captum_parity()


if __name__ == "__main__":
    main()
