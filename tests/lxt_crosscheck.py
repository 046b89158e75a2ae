"""Run by a Python that has lxt (tests/test_attnlrp.py): attnlrp.attach's hooks against lxt's own
monkey-patched torchvision ViT (CP-LRP, lxt's default map for it). Prints one JSON line.

Usage: python lxt_crosscheck.py PATH/TO/attnlrp.py
"""
import importlib.util
import json
import sys

import torch
from torchvision.models import vision_transformer


def main(path: str) -> None:
    spec = importlib.util.spec_from_file_location("attnlrp", path)
    attnlrp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(attnlrp)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = vision_transformer.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    with torch.no_grad():  # torchvision starts the head (and class token) at zero: no relevance at all
        torch.nn.init.normal_(model.heads.head.weight, std=0.5)
        torch.nn.init.normal_(model.class_token, std=0.5)
    x = torch.randn(3, 3, 32, 32)
    target = torch.tensor([0, 2, 4])
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xs).gather(1, target[:, None]).sum(), xs)
    vanilla = x * g
    hooked, logit = attnlrp.relevance(model, x, target, "cp")
    try:
        attnlrp.attach(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()))
        unknown = ""
    except ValueError as error:
        unknown = str(error)
    try:
        attnlrp.attach(model, "attnlrp")
        refused = ""
    except ValueError as error:
        refused = str(error)

    from lxt.efficient import monkey_patch

    monkey_patch(vision_transformer)  # process-wide, no undo: this process ends here
    xs = x.clone().requires_grad_(True)
    z = model(xs).gather(1, target[:, None])[:, 0]
    (g,) = torch.autograd.grad(z.sum(), xs)
    patched = xs.detach() * g
    print(json.dumps({
        "max_abs_diff": float((hooked - patched).abs().max()),
        "scale": float(patched.abs().max()),
        "logit_diff": float((logit - z.detach()).abs().max()),
        "sums": patched.flatten(1).sum(1).tolist(),
        "vanilla_diff": float((vanilla - patched).abs().max()),
        "refused_attnlrp": refused,
        "refused_unknown": unknown,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
