"""`libragrad-fx export`: the transformed model as a torch.export program, reloaded and checked."""
from __future__ import annotations

import argparse
import os
from typing import Callable

import torch

from ..common import load, needs_original, node_counts, transform
from ..progress import step
from ..validate import output_file

TAKES_MODEL = True


def register(commands, parents) -> None:
    sub = commands.add_parser("export", parents=parents, help="torch.export the transformed model (.pt2)")
    sub.add_argument("--out", required=True, metavar="FILE.pt2",
                     help="where to write the program (a .pt2 file; MODEL specs recognise it by that suffix)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ...core.export import load as load_program
    from ...core.export import reference_mismatch, save

    output_file(args.out, suffix=".pt2")
    loaded, x = load(args)
    needs_original(loaded, "export")
    gm = transform(loaded.model, x, args)
    step("exporting (torch.export, dynamic batch)")
    exported = save(gm, x, args.out, label=loaded.label, mean=loaded.mean, std=loaded.std)
    step("reloading and checking the program")
    back = load_program(args.out)
    mismatch = reference_mismatch(back)
    if mismatch is not None:
        raise RuntimeError(f"the reloaded program is not the transformed model: {mismatch}")
    rel = gradient_gap(gm, back.module, x)
    report = gm.libragrad_report
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB): {loaded.label}, preset {report.preset}, "
          f"{node_counts(report)}")
    for note in exported.meta.get("notes", []):
        print(f"note: {note}")
    print(f"reloaded: forward bit-identical on a batch of 2; input gradient rel. difference {rel:.1e} "
          f"on a batch of {x.shape[0]}")
    print(f"load it with: import libragrad_fx, torch; m = torch.export.load({args.out!r}).module()")
    return 0


def gradient_gap(a: Callable, b: Callable, x: torch.Tensor) -> float:
    """||grad_a - grad_b|| / ||grad_a|| of the summed output's top logit, w.r.t. the input."""
    grads = []
    for model in (a, b):
        xi = x.detach().clone().requires_grad_(True)
        out = model(xi)
        target = out.detach().flatten(1).argmax(1)
        (g,) = torch.autograd.grad(out.flatten(1).gather(1, target[:, None]).sum(), xi)
        grads.append(g)
    return float((grads[0] - grads[1]).norm() / grads[0].norm().clamp_min(1e-30))
