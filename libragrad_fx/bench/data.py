"""Synthetic images with ground-truth object masks for attribution benchmarks.

Each image holds one or two filled shapes of different classes on a textured, cluttered
background. Classes differ only by *shape*: colour, size, position and rotation are drawn
independently of the class, so a model can only solve the task by looking at the object,
and the object's pixel mask is the ground truth an attribution map should point at.
Objects are light (random hue) on a dark textured background; distractor strokes are thin
lines of any colour, straight or bent once, drawn beneath the objects.

Everything is drawn from ``numpy.random.default_rng(seed)`` up front and rendered with
vectorised torch code, so a given ``(n, seed, two_objects, size)`` always yields
bit-identical tensors, independent of how rendering is chunked.

Seed convention (disjoint streams): the bundled models were trained only on batches drawn
with seeds ``TRAIN_SEED_BASE + step`` (step < 10**6); held-out evaluation uses
``HELDOUT_SEED``, far outside that range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CLASSES",
    "NUM_CLASSES",
    "Batch",
    "Objects",
    "generate",
    "objects",
    "TRAIN_SEED_BASE",
    "HELDOUT_SEED",
]

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "ell",
    "tee",
    "arrow",
    "crescent",
)
NUM_CLASSES = len(CLASSES)

TRAIN_SEED_BASE = 0
HELDOUT_SEED = 2_000_000_011

# Shapes live in the unit disk of a local frame (scaled by the object's radius in pixels),
# so two objects whose centres are further apart than r1 + r2 cannot overlap.
_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-0.7, -0.7], [0.7, -0.7], [0.7, 0.7], [-0.7, 0.7]]),
    "triangle": np.array(
        [[math.cos(a), math.sin(a)] for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    ),
    "cross": np.array(
        [
            [0.3, 0.95], [0.3, 0.3], [0.95, 0.3], [0.95, -0.3], [0.3, -0.3], [0.3, -0.95],
            [-0.3, -0.95], [-0.3, -0.3], [-0.95, -0.3], [-0.95, 0.3], [-0.3, 0.3], [-0.3, 0.95],
        ]
    ),
    "star": np.array(
        [
            [r * math.cos(math.pi / 2 + k * math.pi / 5), r * math.sin(math.pi / 2 + k * math.pi / 5)]
            for k, r in zip(range(10), [1.0, 0.42] * 5)
        ]
    ),
    "ell": np.array(
        [[-0.7, -0.7], [0.7, -0.7], [0.7, -0.28], [-0.28, -0.28], [-0.28, 0.7], [-0.7, 0.7]]
    ),
    "tee": np.array(
        [
            [-0.7, 0.7], [0.7, 0.7], [0.7, 0.28], [0.22, 0.28],
            [0.22, -0.9], [-0.22, -0.9], [-0.22, 0.28], [-0.7, 0.28],
        ]
    ),
    "arrow": np.array(
        [[-0.9, 0.2], [0.1, 0.2], [0.1, 0.6], [0.95, 0.0], [0.1, -0.6], [0.1, -0.2], [-0.9, -0.2]]
    ),
}

# Radii (pixels at size 64) of objects; scaled linearly with the image size.
_R_MIN, _R_MAX = 9.0, 14.0
_OBJ_MIN_SUM, _BG_MAX_SUM = 1.8, 1.05  # R+G+B bounds of object / background colours
_MAX_STROKES = 7


@dataclass
class Batch:
    """A batch of generated images.

    images: (n, 3, H, W) float32 in [0, 1].
    labels: (n, C) float32 multi-hot.
    masks:  (n, C, H, W) bool, one plane per class; empty where the class is absent.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, idx) -> "Batch":
        return Batch(self.images[idx], self.labels[idx], self.masks[idx])


@dataclass
class Objects:
    """What :func:`generate` drew for each image's objects (the same draws, not estimates).

    classes: (n, 2) int64 class of the first and second object.
    present: (n, 2) bool; the second object exists only on two-object images.
    colours: (n, 2, 3) float32 RGB in [0, 1] (light: channel sum >= 1.8).
    centres: (n, 2, 2) float32 (x, y) in pixels, origin at the top left corner.
    radii:   (n, 2) float32 in pixels.
    """

    classes: torch.Tensor
    present: torch.Tensor
    colours: torch.Tensor
    centres: torch.Tensor
    radii: torch.Tensor


def _segment_dist2(px: torch.Tensor, py: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distance from grid points (m,H,W) to segments a->b, a/b: (m,2) per item."""
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    ex, ey = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    wx, wy = px - ax, py - ay
    t = ((wx * ex + wy * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0.0, 1.0)
    dx, dy = wx - t * ex, wy - t * ey
    return dx * dx + dy * dy


def _polygon_sdf(u: torch.Tensor, v: torch.Tensor, verts: np.ndarray) -> torch.Tensor:
    """Signed distance (negative inside) from local coords (m,H,W) to a fixed polygon."""
    vs = torch.as_tensor(verts, dtype=torch.float32)
    k = vs.shape[0]
    d = None
    inside = torch.zeros(u.shape, dtype=torch.bool)
    for i in range(k):
        (x0, y0), (x1, y1) = vs[i].tolist(), vs[(i + 1) % k].tolist()
        ex, ey = x1 - x0, y1 - y0
        wx, wy = u - x0, v - y0
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
        di = torch.hypot(wx - t * ex, wy - t * ey)
        d = di if d is None else torch.minimum(d, di)
        if y0 != y1:  # even-odd crossing rule; horizontal edges never cross a horizontal ray
            crosses = ((y0 > v) != (y1 > v)) & (u < x0 + (v - y0) * ex / ey)
            inside ^= crosses
    return torch.where(inside, -d, d)


def _shape_sdf(cls: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance in local (unit-radius) units for class index ``cls``."""
    name = CLASSES[cls]
    r = torch.hypot(u, v)
    if name == "circle":
        return r - 0.9
    if name == "ring":
        return (r - 0.72).abs() - 0.23
    if name == "crescent":
        return torch.maximum(r - 0.95, 0.75 - torch.hypot(u - 0.42, v))
    return _polygon_sdf(u, v, _POLYGONS[name])


def _colours_with_sum(
    rng: np.random.Generator, shape: tuple[int, ...], lo_sum: float, hi_sum: float, lo: float, hi: float
) -> np.ndarray:
    """Uniform RGB colours in [lo, hi]^3 conditioned on lo_sum <= R+G+B <= hi_sum (rejection)."""
    c = rng.uniform(lo, hi, (*shape, 3))
    for _ in range(200):
        bad = (c.sum(-1) < lo_sum) | (c.sum(-1) > hi_sum)
        if not bad.any():
            return c
        c[bad] = rng.uniform(lo, hi, (int(bad.sum()), 3))
    raise RuntimeError("colour rejection sampling did not converge")


def _draw_params(n: int, rng: np.random.Generator, two_objects: bool | None, size: int, clutter: float) -> dict:
    """Draw every random quantity of a batch up front (rendering is then deterministic)."""
    s = size / 64.0
    if two_objects is None:
        two = rng.random(n) < 0.5
    else:
        two = np.full(n, bool(two_objects))
    c1 = rng.integers(0, NUM_CLASSES, n)
    c2 = (c1 + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES  # always a different class
    radius = rng.uniform(_R_MIN * s, _R_MAX * s, (n, 2))
    angle = rng.uniform(0.0, 2 * math.pi, (n, 2))

    # Centres: rejection-sample candidate pairs, keep the first non-overlapping one.
    n_cand = 48
    lo = radius[:, None, :] + 1.0
    hi = size - 1.0 - radius[:, None, :]
    cand = rng.uniform(0.0, 1.0, (n, n_cand, 2, 2))  # (n, cand, object, xy)
    cand = lo[..., None] + cand * (hi - lo)[..., None]
    dist = np.linalg.norm(cand[:, :, 0] - cand[:, :, 1], axis=-1)
    ok = dist >= radius.sum(1)[:, None] + 1.0
    first = np.where(ok.any(1), ok.argmax(1), -1)
    centre = cand[np.arange(n), np.maximum(first, 0)]
    # Fallback (rare): opposite corners are always far enough apart for these radii.
    bad = first < 0
    if bad.any():
        centre[bad, 0] = radius[bad, 0, None] + 1.0
        centre[bad, 1] = size - 1.0 - radius[bad, 1, None]

    # Hue is random and class-independent, but objects are always *light* (channel sum >=
    # _OBJ_MIN_SUM) on a *dark* background (channel sum <= _BG_MAX_SUM): a consistent contrast
    # sign lets small transformers trained from scratch find the shapes quickly (with fully
    # random colours they sat on the label-prior plateau for hundreds of steps).
    bg_c = _colours_with_sum(rng, (n, 2), 0.0, _BG_MAX_SUM, 0.0, 0.6)
    # clutter < 1 pulls the second background colour towards the first (less texture).
    bg_c[:, 1] = bg_c[:, 0] + clutter * (bg_c[:, 1] - bg_c[:, 0])
    obj_c = _colours_with_sum(rng, (n, 2), _OBJ_MIN_SUM, 3.0, 0.15, 1.0)

    n_strokes = np.rint(clutter * rng.integers(3, _MAX_STROKES + 1, n)).astype(np.int64)
    stroke_p0 = rng.uniform(0.0, size, (n, _MAX_STROKES, 2))
    stroke_len = rng.uniform(8.0 * s, 30.0 * s, (n, _MAX_STROKES))
    stroke_dir = rng.uniform(0.0, 2 * math.pi, (n, _MAX_STROKES))
    # A bend makes a stroke a two-segment polyline; both segments are thin lines, never filled.
    stroke_bend = rng.uniform(-2.2, 2.2, (n, _MAX_STROKES)) * (rng.random((n, _MAX_STROKES)) < 0.5)
    stroke_w = rng.uniform(0.8, 1.8, (n, _MAX_STROKES)) * max(s, 0.5)
    stroke_c = rng.uniform(0.0, 1.0, (n, _MAX_STROKES, 3))

    noise_lo = rng.standard_normal((n, 1, 4, 4))
    noise_hi = rng.standard_normal((n, 1, 12, 12))
    grating_f = rng.uniform(0.1, 0.45, (n, 2))  # cycles / pixel (at size 64), random direction
    grating_a = clutter * rng.uniform(0.0, 0.12, n)
    grating_ph = rng.uniform(0.0, 2 * math.pi, n)
    pixel_sigma = clutter * rng.uniform(0.0, 0.04, n)
    pixel_noise = rng.standard_normal((n, 3, size, size), dtype=np.float32)

    return dict(
        two=two, cls=np.stack([c1, c2], 1), radius=radius, angle=angle, centre=centre,
        bg_c=bg_c, obj_c=obj_c, n_strokes=n_strokes, stroke_p0=stroke_p0, stroke_len=stroke_len,
        stroke_dir=stroke_dir, stroke_bend=stroke_bend, stroke_w=stroke_w, stroke_c=stroke_c,
        noise_lo=noise_lo, noise_hi=noise_hi, grating_f=grating_f / s, grating_a=grating_a,
        grating_ph=grating_ph, pixel_sigma=pixel_sigma, pixel_noise=pixel_noise,
    )


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)


def _render(p: dict, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = p["two"].shape[0]
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    # Separable grid: broadcasting (1,1,W) against (1,H,1) halves the per-pixel work.
    px, py = coords.view(1, 1, size), coords.view(1, size, 1)

    # Background: two-colour mix driven by smooth multi-scale noise, plus a faint grating.
    lo = F.interpolate(_t(p["noise_lo"]), size=(size, size), mode="bicubic", align_corners=False)
    hi = F.interpolate(_t(p["noise_hi"]), size=(size, size), mode="bilinear", align_corners=False)
    t = torch.sigmoid(1.2 * lo + 0.6 * hi)  # (n,1,H,W)
    bg = _t(p["bg_c"])
    img = bg[:, 0, :, None, None] * (1 - t) + bg[:, 1, :, None, None] * t
    gf = _t(p["grating_f"])
    phase = 2 * math.pi * (gf[:, 0, None, None] * px + gf[:, 1, None, None] * py) + _t(p["grating_ph"])[:, None, None]
    img = img + (_t(p["grating_a"])[:, None, None] * torch.sin(phase))[:, None]
    img = img.contiguous()

    # Distractor strokes: thin straight or once-bent lines, drawn under the objects.
    p0 = _t(p["stroke_p0"])
    ln, dr, bend = _t(p["stroke_len"]), _t(p["stroke_dir"]), _t(p["stroke_bend"])
    half = ln / 2
    p1 = p0 + torch.stack([torch.cos(dr), torch.sin(dr)], -1) * half[..., None]
    p2 = p1 + torch.stack([torch.cos(dr + bend), torch.sin(dr + bend)], -1) * half[..., None]
    sw, sc = _t(p["stroke_w"]), _t(p["stroke_c"])
    active = torch.as_tensor(np.arange(_MAX_STROKES)[None, :] < p["n_strokes"][:, None])
    for k in range(_MAX_STROKES):
        d = torch.minimum(_segment_dist2(px, py, p0[:, k], p1[:, k]), _segment_dist2(px, py, p1[:, k], p2[:, k]))
        alpha = (sw[:, k, None, None] / 2 + 0.5 - d.sqrt_()).clamp_(0.0, 1.0) * active[:, k, None, None]
        img.lerp_(sc[:, k, :, None, None].expand_as(img), alpha[:, None].expand_as(img))

    # Objects: signed distance in the object's rotated, scaled frame -> antialiased coverage.
    masks = torch.zeros(n, NUM_CLASSES, size, size, dtype=torch.bool)
    labels = torch.zeros(n, NUM_CLASSES, dtype=torch.float32)
    cls = torch.as_tensor(p["cls"])
    rad, ang, cen, oc = _t(p["radius"]), _t(p["angle"]), _t(p["centre"]), _t(p["obj_c"])
    two = torch.as_tensor(p["two"])
    for j in range(2):
        present = torch.ones(n, dtype=torch.bool) if j == 0 else two
        alpha = torch.zeros(n, size, size)
        for c in range(NUM_CLASSES):
            sel = torch.nonzero(present & (cls[:, j] == c)).flatten()
            if sel.numel() == 0:
                continue
            dx = px - cen[sel, j, 0, None, None]
            dy = py - cen[sel, j, 1, None, None]
            ca, sa = torch.cos(ang[sel, j])[:, None, None], torch.sin(ang[sel, j])[:, None, None]
            r = rad[sel, j, None, None]
            u, v = (ca * dx + sa * dy) / r, (-sa * dx + ca * dy) / r
            sd_px = _shape_sdf(c, u, v) * r
            alpha[sel] = (0.5 - sd_px).clamp(0.0, 1.0)
        img.lerp_(oc[:, j, :, None, None].expand_as(img), alpha[:, None].expand_as(img))
        idx = torch.nonzero(present).flatten()
        masks[idx, cls[idx, j]] = alpha[idx] >= 0.5
        labels[idx, cls[idx, j]] = 1.0

    img = img + _t(p["pixel_sigma"])[:, None, None, None] * torch.from_numpy(p["pixel_noise"])
    return img.clamp(0.0, 1.0), labels, masks


def generate(
    n: int,
    seed: int = 0,
    *,
    two_objects: bool | None = None,
    size: int = 64,
    clutter: float = 1.0,
    chunk: int = 512,
) -> Batch:
    """Generate ``n`` images deterministically from ``seed``.

    two_objects: None mixes (each image has two objects with probability 1/2), True/False
    forces two objects / one object. Two objects always have different classes and disjoint
    masks. ``clutter`` in [0, 1] scales the background texture, the number of distractor
    strokes and the pixel noise (1 = the benchmark setting; lower values serve as a training
    curriculum). ``chunk`` only bounds memory; it does not change the output.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if size < 32:
        raise ValueError("size must be >= 32 for two non-overlapping objects")
    if not 0.0 <= clutter <= 1.0:
        raise ValueError("clutter must be in [0, 1]")
    rng = np.random.default_rng(seed)
    p = _draw_params(n, rng, two_objects, size, float(clutter))
    out_i, out_l, out_m = [], [], []
    # Rendering is many small elementwise ops; intra-op threading gains little on them and,
    # on a loaded machine, made generation ~20x slower (measured: 600 images 25 s with 2
    # threads vs 1.2 s with 1). Run single-threaded, then restore the caller's setting.
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for s in range(0, n, chunk):
            sl = slice(s, min(s + chunk, n))
            i, l, m = _render({k: v[sl] for k, v in p.items()}, size)
            out_i.append(i)
            out_l.append(l)
            out_m.append(m)
    finally:
        torch.set_num_threads(prev_threads)
    if n == 0:
        return Batch(
            torch.zeros(0, 3, size, size),
            torch.zeros(0, NUM_CLASSES),
            torch.zeros(0, NUM_CLASSES, size, size, dtype=torch.bool),
        )
    return Batch(torch.cat(out_i), torch.cat(out_l), torch.cat(out_m))


def objects(
    n: int,
    seed: int = 0,
    *,
    two_objects: bool | None = None,
    size: int = 64,
    clutter: float = 1.0,
) -> Objects:
    """The objects of ``generate(n, seed, two_objects=..., size=..., clutter=...)``: class, colour,
    centre and radius of each, from the same random draws (no rendering)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    p = _draw_params(n, np.random.default_rng(seed), two_objects, size, float(clutter))
    present = np.stack([np.ones(n, dtype=bool), p["two"]], 1)
    return Objects(torch.as_tensor(p["cls"], dtype=torch.int64), torch.as_tensor(present), _t(p["obj_c"]),
                   _t(p["centre"]), _t(p["radius"]))
