"""Attribution-quality metrics (docs/METHOD.md section 6), batched torch functions.

Conventions shared by every function here:

* An attribution *map* is ``(n, h, w)``, or ``(n, c, h, w)`` whose channel axis is summed
  (e.g. Input x Gradient on RGB), at pixel resolution (h, w = image size) or at patch/token
  resolution (h, w = image size / patch size).
* A *mask* is ``(n, H, W)`` bool at image resolution.
* ``targets`` are ``(n,)`` class indices.
* Larger map values mean "more important for the target".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "DeletionResult",
    "average_precision",
    "class_discrimination",
    "completeness_error",
    "deletion_curves",
    "patch_scores",
    "pointing_game",
    "segmentation_ap",
    "to_image_resolution",
]

Output = Literal["sigmoid", "softmax"] | Callable[[torch.Tensor], torch.Tensor]


def _as_map(maps: torch.Tensor) -> torch.Tensor:
    """(n,h,w) float; a channel axis (n,c,h,w) is summed."""
    if maps.ndim == 4:
        maps = maps.sum(1)
    if maps.ndim != 3:
        raise ValueError(f"expected a map of shape (n,h,w) or (n,c,h,w), got {tuple(maps.shape)}")
    return maps.float()


def patch_scores(maps: torch.Tensor, image_hw: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Score per patch, (n, gh*gw) in row-major patch order.

    A pixel-resolution map (h, w == image_hw) is summed within each ``patch_size`` square;
    a map already at patch resolution (h, w == image_hw / patch_size) is used as is.
    """
    m = _as_map(maps)
    H, W = image_hw
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {image_hw} is not divisible by patch size {patch_size}")
    gh, gw = H // patch_size, W // patch_size
    if m.shape[-2:] == (H, W):
        m = m.reshape(m.shape[0], gh, patch_size, gw, patch_size).sum((2, 4))
    elif m.shape[-2:] != (gh, gw):
        raise ValueError(f"map size {tuple(m.shape[-2:])} is neither the image size {image_hw} "
                         f"nor the patch grid {(gh, gw)}")
    return m.reshape(m.shape[0], gh * gw)


def to_image_resolution(maps: torch.Tensor, image_hw: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Upsample maps to (n, H, W) (no-op at image resolution); ``mode`` as in F.interpolate."""
    m = _as_map(maps)
    if tuple(m.shape[-2:]) == tuple(image_hw):
        return m
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(m[:, None], size=tuple(image_hw), mode=mode, **kw)[:, 0]


# --------------------------------------------------------------------------- deletion


@dataclass
class DeletionResult:
    """Deletion curves and their areas.

    fractions: (K+1,) fraction of patches removed at each step (0 ... 1).
    mif_prob, lif_prob: (n, K+1) target probability after removing the most / least
        influential patches first.
    mif_pred, lif_pred: (n, K+1) 1.0 where the target is still predicted, else 0.0.
    AUCs are trapezoidal areas over ``fractions`` (per image, then averaged in ``summary``).
    """

    fractions: torch.Tensor
    mif_prob: torch.Tensor
    lif_prob: torch.Tensor
    mif_pred: torch.Tensor
    lif_pred: torch.Tensor

    def _auc(self, curve: torch.Tensor) -> torch.Tensor:
        return torch.trapezoid(curve, self.fractions, dim=-1)

    @property
    def auc(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per-image AUCs: ``{"prob"|"pred": {"mif", "lif", "srg"}}`` with srg = lif - mif."""
        out = {}
        for key, (mif, lif) in {"prob": (self.mif_prob, self.lif_prob), "pred": (self.mif_pred, self.lif_pred)}.items():
            a_m, a_l = self._auc(mif), self._auc(lif)
            out[key] = {"mif": a_m, "lif": a_l, "srg": a_l - a_m}
        return out

    def summary(self) -> dict[str, float]:
        """Mean AUCs over images, e.g. ``{"prob_mif": ..., "prob_srg": ..., "pred_lif": ...}``."""
        return {f"{k}_{m}": float(v.mean()) for k, d in self.auc.items() for m, v in d.items()}


def _output_fns(output: Output) -> tuple[Callable, Callable]:
    """(probability of target, still-predicted indicator) as functions of (logits, targets)."""
    idx = lambda t: t[:, None]  # noqa: E731
    if output == "sigmoid":
        # Multi-label: the target is predicted iff its own logit is positive (sigmoid > 0.5).
        prob = lambda z, t: torch.sigmoid(z.gather(1, idx(t))[:, 0])  # noqa: E731
        pred = lambda z, t: (z.gather(1, idx(t))[:, 0] > 0).float()  # noqa: E731
    elif output == "softmax":
        prob = lambda z, t: torch.softmax(z, 1).gather(1, idx(t))[:, 0]  # noqa: E731
        pred = lambda z, t: (z.argmax(1) == t).float()  # noqa: E731
    elif callable(output):
        # A custom transform logits -> scores; "predicted" means the target scores highest.
        prob = lambda z, t: output(z).gather(1, idx(t))[:, 0]  # noqa: E731
        pred = lambda z, t: (output(z).argmax(1) == t).float()  # noqa: E731
    else:
        raise ValueError(f"output must be 'sigmoid', 'softmax' or a callable, got {output!r}")
    return prob, pred


@torch.no_grad()
def deletion_curves(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    patch_size: int = 8,
    step_fraction: float = 0.1,
    baseline: Literal["zero", "mean"] | torch.Tensor = "zero",
    output: Output = "sigmoid",
    chunk: int = 256,
) -> DeletionResult:
    """Patch-deletion curves for most-influential-first (MIF) and least-influential-first (LIF).

    The image is cut into ``patch_size`` squares; patch scores come from ``maps`` (pixel maps
    are summed per patch). Patches are ranked by score (descending for MIF, ascending for LIF;
    a stable sort, so tied patches are removed in row-major order in *both* orders, which makes
    a constant map score SRG = 0). At step k = 0..K, with K = ceil(1/step_fraction), the first
    round(min(k*step_fraction, 1) * P) ranked patches of the P are replaced by the baseline:

    * ``"zero"``: 0 in every channel (default);
    * ``"mean"``: the per-channel mean of ``images`` (pass a (c,) tensor to use a fixed
      dataset mean instead).

    The model sees every perturbed image (all steps of all images, batched ``chunk`` at a
    time) and we record, for the target class, its probability (``output="sigmoid"``:
    sigmoid of the target logit, the multi-label case; ``"softmax"``: softmax over classes;
    or a callable logits -> scores) and whether it is still predicted (sigmoid: logit > 0;
    softmax / callable: target is the argmax). MIF AUC: lower is better; LIF AUC: higher is
    better; SRG = LIF - MIF: higher is better.
    """
    if not 0 < step_fraction <= 1:
        raise ValueError("step_fraction must be in (0, 1]")
    n, c, H, W = images.shape
    scores = patch_scores(maps, (H, W), patch_size).to(images.device)
    P = scores.shape[1]
    gh, gw = H // patch_size, W // patch_size
    K = math.ceil(1 / step_fraction - 1e-9)
    counts = torch.tensor([round(min(k * step_fraction, 1.0) * P) for k in range(K + 1)], device=images.device)
    fractions = counts.float() / P

    if isinstance(baseline, str):
        if baseline == "zero":
            base = torch.zeros(c, device=images.device, dtype=images.dtype)
        elif baseline == "mean":
            base = images.mean((0, 2, 3))
        else:
            raise ValueError(f"baseline must be 'zero', 'mean' or a tensor, got {baseline!r}")
    else:
        base = torch.as_tensor(baseline, device=images.device, dtype=images.dtype).reshape(c)
    base = base.view(1, c, 1, 1)

    prob_fn, pred_fn = _output_fns(output)
    targets = targets.to(images.device).long()

    def rank_of(order: torch.Tensor) -> torch.Tensor:
        # rank[i, p] = position of patch p in the removal order
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(P, device=order.device).expand(n, P))
        return rank

    ranks = {
        "mif": rank_of(torch.sort(scores, dim=1, descending=True, stable=True).indices),
        "lif": rank_of(torch.sort(scores, dim=1, descending=False, stable=True).indices),
    }
    # Jobs: (order, image index, step), evaluated in flat chunks across images and steps. Both orders
    # start from the same image (nothing removed) and end on the same one (everything removed): LIF
    # reuses MIF's first and last points.
    steps = K + 1
    out_prob = {k: torch.empty(n, steps) for k in ranks}
    out_pred = {k: torch.empty(n, steps) for k in ranks}
    grid_i, grid_s = torch.meshgrid(torch.arange(n), torch.arange(steps), indexing="ij")
    inner = (grid_s > 0) & (grid_s < K) if counts[0] == 0 and counts[K] == P else torch.ones_like(grid_s, dtype=torch.bool)
    all_i, all_s = grid_i.flatten(), grid_s.flatten()
    job_which = torch.cat([torch.zeros_like(all_i), torch.ones_like(grid_i[inner])])
    job_img = torch.cat([all_i, grid_i[inner]]).to(images.device)
    job_step = torch.cat([all_s, grid_s[inner]]).to(images.device)
    for start in range(0, len(job_img), chunk):
        which = job_which[start:start + chunk].to(images.device)
        img_i, step_i = job_img[start:start + chunk], job_step[start:start + chunk]
        rank = torch.where(
            (which == 0)[:, None], ranks["mif"][img_i], ranks["lif"][img_i]
        )  # (m, P)
        removed = (rank < counts[step_i][:, None]).to(images.dtype).view(-1, 1, gh, gw)
        removed = removed.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
        x = images[img_i] * (1 - removed) + base * removed
        z = model(x)
        t = targets[img_i]
        pr, pd = prob_fn(z, t).float().cpu(), pred_fn(z, t).float().cpu()
        for w, key in ((0, "mif"), (1, "lif")):
            sel = (which == w).cpu()
            out_prob[key][img_i.cpu()[sel], step_i.cpu()[sel]] = pr[sel]
            out_pred[key][img_i.cpu()[sel], step_i.cpu()[sel]] = pd[sel]
    shared = ~inner
    out_prob["lif"][shared] = out_prob["mif"][shared]
    out_pred["lif"][shared] = out_pred["mif"][shared]
    return DeletionResult(fractions.cpu(), out_prob["mif"], out_prob["lif"], out_pred["mif"], out_pred["lif"])


# --------------------------------------------------------------------------- localisation


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row average precision, (n, N) scores vs (n, N) bool labels -> (n,).

    AP = sum over distinct score thresholds t (descending) of (R_t - R_prev) * P_t, the step
    (non-interpolated) definition also used by scikit-learn. Tied scores form one threshold,
    so their order never matters. Rows without positives give NaN.
    """
    scores = scores.float()
    s, order = torch.sort(scores, dim=1, descending=True)
    lab = labels.gather(1, order).float()
    N = s.shape[1]
    tp = lab.cumsum(1)
    seen = torch.arange(1, N + 1, device=s.device, dtype=torch.float32).expand_as(tp)
    precision = tp / seen
    # Precision is read at the end of each block of tied scores.
    is_end = torch.ones_like(s, dtype=torch.bool)
    is_end[:, :-1] = s[:, 1:] != s[:, :-1]
    block = torch.cat([torch.zeros_like(s[:, :1], dtype=torch.long), is_end[:, :-1].long().cumsum(1)], 1)
    # Each block has exactly one end; non-end entries add 0 to their block's slot.
    end_prec = torch.zeros_like(precision).scatter_add_(1, block, torch.where(is_end, precision, torch.zeros_like(precision)))
    npos = lab.sum(1)
    ap = (lab * end_prec.gather(1, block)).sum(1) / npos
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


def segmentation_ap(
    maps: torch.Tensor, masks: torch.Tensor, *, mode: str = "bilinear", absolute: bool = False
) -> torch.Tensor:
    """Per-image AP of the attribution map (upsampled to mask size) against the object mask.

    Every pixel is a retrieval item scored by the map value (its absolute value when
    ``absolute``), relevant iff inside the mask. Returns (n,); NaN for empty masks. Average
    with ``torch.nanmean`` for the dataset score.
    """
    m = to_image_resolution(maps, tuple(masks.shape[-2:]), mode)
    if absolute:
        m = m.abs()
    return average_precision(m.flatten(1), masks.flatten(1).bool())


def _dilate(masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Grow masks by a Euclidean radius of ``tolerance`` pixels."""
    if tolerance <= 0:
        return masks.bool()
    r = int(math.floor(tolerance))
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disk = ((yy**2 + xx**2) <= tolerance**2).float().to(masks.device)
    grown = F.conv2d(masks.float()[:, None], disk[None, None], padding=r)[:, 0]
    return grown > 0


def pointing_game(
    maps: torch.Tensor, masks: torch.Tensor, *, tolerance: float = 0.0, mode: str = "bilinear"
) -> torch.Tensor:
    """Per-image pointing-game hit in [0, 1]: does the map's maximum fall inside the mask?

    The map is upsampled to mask size; the mask is grown by ``tolerance`` pixels (Euclidean).
    If several pixels tie for the maximum, the score is the fraction of them inside the mask
    (the expected hit under a random tie-break), so a constant map is not a free hit.
    """
    m = to_image_resolution(maps, tuple(masks.shape[-2:]), mode).flatten(1)
    target = _dilate(masks, tolerance).flatten(1)
    is_max = m == m.max(1, keepdim=True).values
    return (is_max & target).sum(1).float() / is_max.sum(1).float()


def class_discrimination(
    maps_a: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
    *,
    mode: str = "bilinear",
    per_area: bool = False,
) -> dict[str, torch.Tensor]:
    """How much of the class-A map falls on object A rather than on object B.

    With M+ = max(map_A, 0) upsampled to image size, mass_X = sum of M+ over mask X (divided by
    the area of X when ``per_area``, so a bigger object does not win by size). Returns per image:

    * ``share``: mass_A / (mass_A + mass_B) in [0, 1] (NaN where both are 0);
    * ``more_on_a``: 1.0 where mass_A > mass_B, else 0.0 (its mean is the pairwise rate).
    """
    m = to_image_resolution(maps_a, tuple(mask_a.shape[-2:]), mode).clamp_min(0)
    ma = (m * mask_a).flatten(1).sum(1)
    mb = (m * mask_b).flatten(1).sum(1)
    if per_area:
        ma = ma / mask_a.flatten(1).sum(1).clamp_min(1)
        mb = mb / mask_b.flatten(1).sum(1).clamp_min(1)
    denom = ma + mb
    share = torch.where(denom > 0, ma / denom.clamp_min(torch.finfo(denom.dtype).tiny), torch.full_like(denom, float("nan")))
    return {"share": share, "more_on_a": (ma > mb).float(), "mass_a": ma, "mass_b": mb}


# --------------------------------------------------------------------------- completeness


def completeness_error(
    attributions: torch.Tensor, target_values: torch.Tensor, *, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completeness error per sample: ``abs = |sum(attribution_i) - f_i|``, ``rel = abs / |f_i|``.

    ``attributions``: (n, ...) summed over all non-batch axes (include bias terms yourself for
    FullGrad); ``target_values``: (n,) the target logits f_i. ``rel`` uses max(|f_i|, eps).
    """
    total = attributions.reshape(attributions.shape[0], -1).double().sum(1)
    f = target_values.reshape(-1).double()
    err = (total - f).abs()
    return err, err / f.abs().clamp_min(eps)
