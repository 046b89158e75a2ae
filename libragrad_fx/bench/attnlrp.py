"""AttnLRP (Achtibat et al., ICML 2024) on the bundled timm models, with the ``lxt`` package's own rules.

lxt's "efficient" AttnLRP is Gradient x Input on a model whose backward follows its rules
(``lxt.efficient.rules``, ``lxt.efficient.patches``):

* LayerNorm: the standard deviation is detached (``patches.layer_norm_forward``);
* element-wise activations (GELU, SiLU): the identity rule, gradient f(x)/x
  (``rules.identity_rule_implicit``);
* attention: the uniform rule on both matmuls, so the gradient of q and k is divided by 4 and
  that of v by 2 (``patches.wrap_attention_forward``); the ``cp`` variant (CP-LRP, lxt's default
  map for torchvision's ViT) detaches q and k instead (``patches.cp_wrap_attention_forward``);
* a gated MLP's product act(g) * u: the uniform rule, gradient divided by 2
  (``patches.gated_mlp_forward``);
* linear layers: the epsilon rule, i.e. the plain gradient (no zennit gamma rule: that needs
  per-model tuning, which lxt's README leaves to the user).

lxt applies these by replacing ``forward`` of whole classes process-wide (``monkey_patch``) and
covers torchvision's ViT and a few Hugging Face language models; a timm model needs a
hand-written map (lxt issues #20, #31). Here the same rule functions are attached to one model
instance with forward hooks (:func:`attach`), nothing is patched, and every leaf module must be
one the rules know, or :func:`attach` names it and stops.

lxt imports ``transformers`` internals that changed in transformers 5, so it often lives in its
own environment. :class:`AttnLRP` therefore runs this file as a script under a Python that has
``lxt`` (``python=`` or the ``LIBRAGRAD_FX_LXT_PYTHON`` environment variable; the current
interpreter when it has ``lxt``), exchanging the model's state and the images through a
temporary file. As a script, this file imports only torch, timm and lxt.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["VARIANTS", "AttnLRP", "LXTUnavailable", "attach", "find_python", "relevance"]

VARIANTS = ("attnlrp", "cp")
"""``attnlrp``: lxt's uniform rule in attention; ``cp``: CP-LRP, q and k detached."""

ENV = "LIBRAGRAD_FX_LXT_PYTHON"


class LXTUnavailable(RuntimeError):
    """No Python with the ``lxt`` package was found."""


# --------------------------------------------------------------------------- rules (worker side)


def _identity(module: nn.Module) -> bool:
    return type(module) is nn.Identity


# Modules whose own forward only wires children together, adds, concatenates, reshapes or scales
# by a parameter: complete as they are, no rule needed. Any other class stops attach().
STRUCTURAL = frozenset({
    "Sequential", "ModuleList", "Identity", "Dropout", "DropPath", "Linear", "NonDynamicallyQuantizableLinear",
    "Conv2d", "LayerScale", "PatchEmbed", "RotaryEmbeddingCat",
    "VisionTransformer", "Block", "Mlp", "Eva", "EvaBlock", "MlpMixer", "MixerBlock", "Beit",  # timm
    "Encoder", "EncoderBlock", "MLPBlock",  # torchvision
})


def _detach_query_key(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """CP-LRP on ``nn.MultiheadAttention``: its query and key inputs carry no gradient
    (lxt's ``cp_multi_head_attention_forward``; each detached on its own, as lxt does)."""
    from lxt.efficient.rules import stop_gradient

    args = list(args)
    for i, name in enumerate(("query", "key")):
        if i < len(args):
            args[i] = stop_gradient(args[i])
        elif name in kwargs:
            kwargs[name] = stop_gradient(kwargs[name])
    return tuple(args), kwargs


def attach(model: nn.Module, variant: str = "attnlrp") -> list[Any]:
    """Attach lxt's rules to ``model`` with forward hooks; returns the handles (``.remove()`` undoes).

    Raises ``ValueError`` naming the first module whose class neither a rule nor :data:`STRUCTURAL`
    covers (its forward may hold a nonlinearity that would otherwise pass unruled).
    """
    from lxt.efficient.patches import layer_norm_forward
    from lxt.efficient.rules import (
        divide_gradient,
        identity_rule_implicit,
        stop_gradient,
    )

    if variant not in VARIANTS:
        raise ValueError(f"unknown AttnLRP variant {variant!r}; valid: {', '.join(VARIANTS)}")
    handles: list[Any] = []

    def replace(module: nn.Module, fn) -> None:
        handles.append(module.register_forward_hook(lambda m, args, out: fn(m, args[0])))

    inside: set[str] = set()  # children that a rule on their parent takes care of
    for name, module in model.named_modules():
        kind = type(module).__name__
        if name in inside:
            continue
        if isinstance(module, nn.LayerNorm):
            replace(module, layer_norm_forward)
        elif isinstance(module, (nn.GELU, nn.SiLU)):
            forward = type(module).forward
            replace(module, lambda m, x, f=forward: identity_rule_implicit(lambda t: f(m, t), x))
        elif isinstance(module, nn.MultiheadAttention):
            if variant != "cp":
                raise ValueError(f"AttnLRP: {name} is an nn.MultiheadAttention, whose q/k/v projections are fused "
                                 "inside; lxt has a rule for it only in the 'cp' variant")
            handles.append(module.register_forward_pre_hook(_detach_query_key, with_kwargs=True))
            inside.update(f"{name}.{child}" for child, _ in module.named_modules() if child)
        elif kind in ("Attention", "EvaAttention", "AttentionRope"):
            # timm computes softmax(q k^T) v inside forward; q_norm/k_norm (after the q/k split) and
            # norm (on the attention's output) are Identity modules there, where the rule can act.
            parts = ("q_norm", "k_norm", "norm")
            if not all(hasattr(module, p) for p in parts):
                raise ValueError(f"AttnLRP: {name} ({type(module).__module__}.{kind}) has no q_norm/k_norm/norm "
                                 "modules where these hooks could act (e.g. BEiT's attention)")
            if not all(_identity(getattr(module, p, None)) for p in parts):
                raise ValueError(f"AttnLRP: {name} ({kind}) has a q/k or output norm; these hooks need them Identity")
            if getattr(module, "gate", None) is not None:
                raise ValueError(f"AttnLRP: {name} ({kind}) has an output gate; these hooks do not cover it")
            if variant == "cp":
                for p in ("q_norm", "k_norm"):
                    replace(getattr(module, p), lambda m, x: stop_gradient(x))
            else:
                # lxt's uniform rule: v 1/2 (on the output, before the projection); q, k 1/2 more
                # through the score path = 1/4 each
                replace(module.norm, lambda m, x: divide_gradient(x, 2))
                for p in ("q_norm", "k_norm"):
                    replace(getattr(module, p), lambda m, x: divide_gradient(x, 2))
            inside.update(f"{name}.{p}" for p in parts)
        elif kind == "AttentionPoolLatent":
            # SigLIP's pooling: a learned query attends over the tokens; q_norm / k_norm are Identity
            # modules after the q/k split, and proj's input is the attention's output (before the
            # residual MLP, whose LayerNorm and GELU get their own rules).
            if not all(_identity(getattr(module, p, None)) for p in ("q_norm", "k_norm")):
                raise ValueError(f"AttnLRP: {name} ({kind}) has a q/k norm; these hooks need them Identity")
            if variant == "cp":
                for p in ("q_norm", "k_norm"):
                    replace(getattr(module, p), lambda m, x: stop_gradient(x))
            else:
                handles.append(module.proj.register_forward_pre_hook(lambda m, args: (divide_gradient(args[0], 2),)))
                for p in ("q_norm", "k_norm"):
                    replace(getattr(module, p), lambda m, x: divide_gradient(x, 2))
            inside.update(f"{name}.{p}" for p in ("q_norm", "k_norm"))
        elif kind in ("GluMlp", "SwiGLU"):
            if not _identity(module.norm):
                raise ValueError(f"AttnLRP: {name} ({kind}) has a norm after its gate product")
            replace(module.norm, lambda m, x: divide_gradient(x, 2))  # the uniform rule on act(g) * u
            inside.add(f"{name}.norm")
        elif kind not in STRUCTURAL:
            raise ValueError(f"AttnLRP: no lxt rule for {name or 'the model'} ({kind}); the hooks cover LayerNorm, "
                             "GELU, SiLU, timm attention, attention pooling, nn.MultiheadAttention (cp) and gated MLPs")
    return handles


def relevance(model: nn.Module, images: Tensor, targets: Tensor, variant: str = "attnlrp",
              batch: int = 64) -> tuple[Tensor, Tensor]:
    """(x * grad~_x f_t, f_t) per image under lxt's rules: [n, C, H, W] relevance, [n] target logits."""
    handles = attach(model, variant)
    rel, logit = [], []
    try:
        for i in range(0, images.shape[0], batch):
            x = images[i:i + batch].detach().clone().requires_grad_(True)
            t = targets[i:i + batch].long()
            with torch.enable_grad():
                z = model(x).gather(1, t[:, None])[:, 0]
                (g,) = torch.autograd.grad(z.sum(), x)
            rel.append((x * g).detach())
            logit.append(z.detach())
    finally:
        for h in handles:
            h.remove()
    return torch.cat(rel), torch.cat(logit)


def _build(spec: dict) -> nn.Module:
    module, _, cls = spec["timm_class"].rpartition(".")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["kwargs"].items()}
    model = getattr(importlib.import_module(module), cls)(**kwargs)
    model.load_state_dict(spec["state_dict"])
    return model.float().eval()


def _worker(inp: str, out: str) -> None:
    job = torch.load(inp, weights_only=False)
    torch.set_num_threads(job.get("threads", 1))
    model = _build(job["model"])
    rel, logit = relevance(model, job["images"], job["targets"], job["variant"], job.get("batch", 64))
    torch.save({"relevance": rel, "logit": logit}, out)


# --------------------------------------------------------------------------- host side


@functools.cache
def _has_lxt(python: str) -> bool:
    # abspath, not realpath: a venv's python is a symlink to the same binary as other venvs' pythons
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        if importlib.util.find_spec("lxt") is None:
            return False
        try:  # lxt.efficient imports transformers internals that transformers 5 removed
            importlib.import_module("lxt.efficient")
        except Exception:
            return False
        return True
    # only look lxt up (importing it takes transformers along: tens of seconds on a loaded machine);
    # the worker reports an lxt that does not import
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('lxt') is None)"
    try:
        done = subprocess.run([python, "-I", "-c", probe], capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_python(python: str | None = None) -> str:
    """The interpreter to run lxt with: ``python``, else ``$LIBRAGRAD_FX_LXT_PYTHON``, else this one.

    Raises :class:`LXTUnavailable` when that interpreter has no ``lxt``.
    """
    chosen = python or os.environ.get(ENV) or sys.executable
    if not _has_lxt(chosen):
        raise LXTUnavailable(f"lxt is not installed for {chosen} (pip install lxt, or point {ENV} at a Python "
                             "that has it)")
    return chosen


class AttnLRP:
    """AttnLRP maps of a timm model, computed with lxt's rules in a separate Python process.

    Args:
        timm_class, kwargs: how to build the model (a bundled model's card holds both).
        state_dict: its weights.
        variant: ``attnlrp`` (default) or ``cp``.
        python: the interpreter that has lxt (see :func:`find_python`).
        threads: torch threads of the worker.
    """

    def __init__(self, timm_class: str, kwargs: dict, state_dict: dict[str, Tensor], *, variant: str = "attnlrp",
                 python: str | None = None, threads: int | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown AttnLRP variant {variant!r}; valid: {', '.join(VARIANTS)}")
        self.python = find_python(python)
        self.variant = variant
        self.threads = threads or torch.get_num_threads()
        self.spec = {"timm_class": timm_class, "kwargs": kwargs,
                     "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}

    @classmethod
    def bundled(cls, name: str, **kwargs: Any) -> AttnLRP:
        """For a bundled model of :mod:`libragrad_fx.bench.models` (its card and weights)."""
        from .models import card, load

        meta = card(name)
        return cls(meta["timm_class"], meta["kwargs"], load(name).state_dict(), **kwargs)

    def attribute(self, images: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(relevance [n, C, H, W], target logits [n]) for ``images`` [n, C, H, W] and classes ``target`` [n]."""
        with tempfile.TemporaryDirectory(prefix="libragrad-lxt-") as tmp:
            inp, out = os.path.join(tmp, "in.pt"), os.path.join(tmp, "out.pt")
            torch.save({"model": self.spec, "images": images.detach().cpu(), "targets": target.detach().cpu(),
                        "variant": self.variant, "threads": self.threads}, inp)
            # -I: the worker must not see this package's directory (its data.py, models.py) on sys.path
            done = subprocess.run([self.python, "-I", str(Path(__file__).resolve()), inp, out], check=False,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise RuntimeError(f"the lxt worker ({self.python}) failed: {last}")
            result = torch.load(out, weights_only=True)
        return result["relevance"], result["logit"]


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
