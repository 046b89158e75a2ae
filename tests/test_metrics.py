"""Hand-made cases with known answers for libragrad_fx.metrics."""

from __future__ import annotations

import math

import pytest
import torch

from libragrad_fx.metrics import (
    average_precision,
    class_discrimination,
    completeness_error,
    deletion_curves,
    patch_scores,
    pointing_game,
    segmentation_ap,
)


def _ap_reference(scores: list[float], labels: list[bool]) -> float:
    """Step AP over distinct thresholds, written as a plain loop."""
    npos = sum(labels)
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        sel = [s >= t for s in scores]
        tp = sum(1 for s, lab in zip(sel, labels) if s and lab)
        precision, recall = tp / sum(sel), tp / npos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def _square_mask(n: int = 1, size: int = 16, lo: int = 4, hi: int = 10) -> torch.Tensor:
    m = torch.zeros(n, size, size, dtype=torch.bool)
    m[:, lo:hi, lo:hi] = True
    return m


# --------------------------------------------------------------------------- AP


def test_ap_matches_reference_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        # Few distinct values force many ties.
        s = torch.randint(0, 5, (1, 30), generator=g).float()
        lab = torch.rand(1, 30, generator=g) < 0.3
        if not lab.any():
            continue
        ref = _ap_reference(s[0].tolist(), lab[0].tolist())
        assert average_precision(s, lab)[0].item() == pytest.approx(ref, abs=1e-6)


def test_ap_known_values() -> None:
    lab = torch.tensor([[True, False, True, False]])
    # ranking: pos, neg, pos, neg -> (1/1 + 2/3) / 2
    assert average_precision(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), lab).item() == pytest.approx(5 / 6)
    # all tied: AP = precision at the single threshold = positive rate
    assert average_precision(torch.ones(1, 4), lab).item() == pytest.approx(0.5)
    assert math.isnan(average_precision(torch.rand(1, 4), torch.zeros(1, 4, dtype=torch.bool)).item())


def test_segmentation_ap_perfect_and_complement() -> None:
    mask = _square_mask(3)
    perfect = mask.float() + 0.01 * torch.rand(3, 16, 16)  # noise inside must not matter
    perfect = torch.where(mask, 1 + perfect, perfect * 0)
    assert torch.allclose(segmentation_ap(perfect, mask), torch.ones(3))
    complement = (~mask).float()
    ap_c = segmentation_ap(complement, mask)
    base_rate = mask.flatten(1).float().mean(1)
    # The complement ranks every positive last: AP equals the (worst possible) base rate.
    assert torch.allclose(ap_c, base_rate)
    rand_ap = segmentation_ap(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)), mask)
    assert (ap_c < rand_ap).all() and (rand_ap < 1).all()


def test_segmentation_ap_upsamples_patch_maps() -> None:
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, :8, :8] = True  # exactly the top-left 8x8 patch
    patch_map = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert segmentation_ap(patch_map, mask, mode="nearest").item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- pointing


def test_pointing_game_hit_miss_tolerance_and_ties() -> None:
    mask = _square_mask(1)
    inside = torch.zeros(1, 16, 16)
    inside[0, 6, 6] = 1.0
    outside = torch.zeros(1, 16, 16)
    outside[0, 0, 0] = 1.0
    near = torch.zeros(1, 16, 16)
    near[0, 11, 6] = 1.0  # one row below the mask (rows 4..9 are inside)
    assert pointing_game(inside, mask).item() == 1.0
    assert pointing_game(outside, mask).item() == 0.0
    assert pointing_game((~mask).float(), mask).item() == 0.0
    assert pointing_game(near, mask).item() == 0.0
    assert pointing_game(near, mask, tolerance=2).item() == 1.0
    # A constant map scores the mask's area share, not a free hit.
    assert pointing_game(torch.ones(1, 16, 16), mask).item() == pytest.approx(36 / 256)


# --------------------------------------------------------------------------- discrimination


def test_class_discrimination() -> None:
    a = torch.zeros(2, 16, 16, dtype=torch.bool)
    b = torch.zeros(2, 16, 16, dtype=torch.bool)
    a[:, :6, :6] = True
    b[:, 10:, 10:] = True
    on_a = a.float() * 3 - b.float()  # negative mass on B must not count
    on_b = b.float()
    half = a.float() + b.float()
    res = class_discrimination(torch.stack([on_a[0], on_b[1]]), a, b)
    assert res["share"].tolist() == [1.0, 0.0]
    assert res["more_on_a"].tolist() == [1.0, 0.0]
    res_h = class_discrimination(half, a, b)
    assert torch.allclose(res_h["share"], torch.full((2,), 0.5))
    assert res_h["more_on_a"].sum() == 0  # a tie is not "more on A"
    assert torch.isnan(class_discrimination(torch.zeros(1, 16, 16), a[:1], b[:1])["share"]).all()


# --------------------------------------------------------------------------- completeness


def test_completeness_error() -> None:
    attr = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [0.0, 0.0]]])
    f = torch.tensor([10.0, -2.0])
    err, rel = completeness_error(attr, f)
    assert err.tolist() == pytest.approx([0.0, 3.0])
    assert rel.tolist() == pytest.approx([0.0, 1.5])


# --------------------------------------------------------------------------- deletion


class RegionSum(torch.nn.Module):
    """Logit of class 0 = (sum of pixels in a region - offset) / scale; class 1 = its negative."""

    def __init__(self, region: torch.Tensor, offset: float, scale: float) -> None:
        super().__init__()
        self.region, self.offset, self.scale = region.float(), offset, scale
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        z = ((x * self.region).sum((1, 2, 3)) - self.offset) / self.scale
        return torch.stack([z, -z], 1)


def _deletion_setup(n: int = 6):
    g = torch.Generator().manual_seed(0)
    images = 0.5 + 0.5 * torch.rand(n, 3, 32, 32, generator=g)
    region = torch.zeros(1, 1, 32, 32)
    region[..., 8:24, 0:16] = 1  # 8 of the 16 patches of size 8
    full = (images * region).sum((1, 2, 3))
    model = RegionSum(region, offset=float(full.mean()) / 2, scale=50.0)
    true_map = region[0, 0].expand(n, 32, 32) * images.sum(1)  # pixel map
    return images, model, true_map


def test_deletion_orders_and_srg_sign() -> None:
    images, model, true_map = _deletion_setup()
    targets = torch.zeros(images.shape[0], dtype=torch.long)
    res = deletion_curves(model, images, true_map, targets, patch_size=8, step_fraction=0.125, chunk=7)
    rnd = deletion_curves(model, images, torch.rand(true_map.shape, generator=torch.Generator().manual_seed(3)),
                          targets, patch_size=8, step_fraction=0.125)
    rev = deletion_curves(model, images, -true_map, targets, patch_size=8, step_fraction=0.125)
    auc, auc_r, auc_rev = res.auc, rnd.auc, rev.auc
    assert res.fractions.tolist() == pytest.approx([k / 8 for k in range(9)])
    assert (auc["prob"]["mif"] < auc_r["prob"]["mif"]).all()
    assert (auc["prob"]["srg"] > 0).all()
    assert (auc_rev["prob"]["srg"] < 0).all()
    assert (auc["pred"]["srg"] > 0).all() and (auc_rev["pred"]["srg"] < 0).all()
    # Start: nothing removed -> identical for MIF and LIF; end: everything removed.
    assert torch.allclose(res.mif_prob[:, 0], res.lif_prob[:, 0])
    assert torch.allclose(res.mif_prob[:, -1], res.lif_prob[:, -1])
    # Halfway through MIF with the true map the region is gone: logit = -offset/scale < 0.
    assert (res.mif_pred[:, 4] == 0).all() and (res.lif_pred[:, 4] == 1).all()
    s = res.summary()
    assert s["prob_srg"] == pytest.approx(s["prob_lif"] - s["prob_mif"])


def test_deletion_matches_per_image_loop_and_batches() -> None:
    images, model, true_map = _deletion_setup(5)
    targets = torch.tensor([0, 1, 0, 1, 0])
    res = deletion_curves(model, images, true_map[:, ::8, ::8] * 0 + patch_scores(true_map, (32, 32), 8).view(5, 4, 4),
                          targets, patch_size=8, step_fraction=0.25, baseline="mean", chunk=16)
    # batched, not one call per image; LIF reuses MIF's first (nothing removed) and last (all removed) points
    assert model.calls == math.ceil((2 * 5 - 2) * 5 / 16)
    # Recompute one image's MIF curve by hand.
    i = 1
    scores = patch_scores(true_map[i : i + 1], (32, 32), 8)[0]
    order = torch.sort(scores, descending=True, stable=True).indices
    mean = images.mean((0, 2, 3)).view(3, 1, 1)
    for k, cnt in enumerate([0, 4, 8, 12, 16]):
        x = images[i].clone()
        for p in order[:cnt].tolist():
            r, c = divmod(p, 4)
            x[:, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = mean
        z = model(x[None])[0]
        assert res.mif_prob[i, k].item() == pytest.approx(torch.sigmoid(z[targets[i]]).item(), abs=1e-6)


def test_deletion_constant_map_has_zero_srg_and_softmax_variant() -> None:
    images, model, _ = _deletion_setup(3)
    targets = torch.zeros(3, dtype=torch.long)
    res = deletion_curves(model, images, torch.ones(3, 4, 4), targets, patch_size=8, output="softmax")
    assert torch.allclose(res.auc["prob"]["srg"], torch.zeros(3))
    z = model(images)
    assert torch.allclose(res.mif_prob[:, 0], torch.softmax(z, 1)[:, 0])
    assert res.mif_pred[:, 0].tolist() == (z.argmax(1) == 0).float().tolist()
    with pytest.raises(ValueError):
        deletion_curves(model, images, torch.ones(3, 5, 5), targets, patch_size=8)
