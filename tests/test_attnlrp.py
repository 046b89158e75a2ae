"""AttnLRP baseline (libragrad_fx.bench.attnlrp): lxt's rules by hooks, checked against lxt's own
monkey-patched torchvision ViT and against LibraGrad's Input x Gradient where the rules coincide.

The lxt tests need a Python with ``lxt`` (``$LIBRAGRAD_FX_LXT_PYTHON`` or this one) and skip otherwise.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libragrad_fx.bench import attnlrp

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def lxt_python() -> str:
    try:
        return attnlrp.find_python()
    except attnlrp.LXTUnavailable as error:
        pytest.skip(str(error))


def test_missing_lxt_is_one_clear_error(tmp_path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(attnlrp.LXTUnavailable, match="pip install lxt"):
        attnlrp.find_python(str(fake))


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="valid: attnlrp, cp"):
        attnlrp.AttnLRP("x.Y", {}, {}, variant="lrp", python=sys.executable)


def test_hooks_match_lxt_monkey_patch_on_torchvision_vit(lxt_python: str) -> None:
    """lxt's default map for torchvision's ViT is CP-LRP; our hooks must give its relevance."""
    done = subprocess.run([lxt_python, "-I", str(HERE / "lxt_crosscheck.py"), attnlrp.__file__],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["scale"] > 0
    # the same rules on the same kernels: equal to float32 rounding (stated tolerance 1e-6 of the scale)
    assert result["max_abs_diff"] <= 1e-6 * result["scale"]
    assert result["logit_diff"] <= 1e-5
    assert result["vanilla_diff"] > 1e-3 * result["scale"]  # the rules do change the gradient
    assert "only in the 'cp' variant" in result["refused_attnlrp"]
    assert "Tanh" in result["refused_unknown"]


@pytest.fixture(scope="module")
def vit_batch():
    from libragrad_fx.bench.data import HELDOUT_SEED, generate

    batch = generate(4, seed=HELDOUT_SEED + 7)
    target = batch.labels.argmax(1)
    return batch.images, target


def test_cp_lrp_equals_libragrad_ixg_on_the_bundled_vit(lxt_python: str, vit_batch) -> None:
    """CP-LRP's rules (q, k detached; LayerNorm's std detached; GELU by f(x)/x) are LibraGrad's on a
    ViT: the hooks in lxt's process and the rewritten graph here must agree."""
    from libragrad_fx.attr import InputXGradient
    from libragrad_fx.bench import models

    images, target = vit_batch
    model = models.load("vit")
    relevance, logit = attnlrp.AttnLRP.bundled("vit", variant="cp", python=lxt_python, threads=1).attribute(
        images, target)
    ixg = InputXGradient(model).attribute(images, target=target)
    with torch.no_grad():
        expected = model(images).gather(1, target[:, None])[:, 0]
    assert torch.allclose(logit, expected, atol=1e-4)
    scale = ixg.abs().max()
    assert (relevance - ixg).abs().max() <= 1e-4 * scale


def test_attnlrp_differs_from_cp_and_keeps_the_forward(lxt_python: str, vit_batch) -> None:
    from libragrad_fx.bench import models

    images, target = vit_batch
    lrp, logit = attnlrp.AttnLRP.bundled("eva02", python=lxt_python, threads=1).attribute(images, target)
    cp, _ = attnlrp.AttnLRP.bundled("eva02", variant="cp", python=lxt_python, threads=1).attribute(images, target)
    with torch.no_grad():
        expected = models.load("eva02")(images).gather(1, target[:, None])[:, 0]
    assert lrp.shape == images.shape
    assert torch.allclose(logit, expected, atol=1e-4)
    assert (lrp - cp).abs().max() > 1e-3 * cp.abs().max()
