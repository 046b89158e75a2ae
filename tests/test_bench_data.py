"""Determinism and ground-truth consistency of the synthetic benchmark data."""

from __future__ import annotations

import pytest
import torch

from libragrad_fx.bench.data import CLASSES, HELDOUT_SEED, NUM_CLASSES, TRAIN_SEED_BASE, generate


@pytest.fixture(scope="module")
def batch():
    return generate(64, seed=7)


def test_shapes_and_dtypes(batch) -> None:
    assert NUM_CLASSES == len(CLASSES) >= 10
    assert len(set(CLASSES)) == len(CLASSES)
    assert batch.images.shape == (64, 3, 64, 64) and batch.images.dtype == torch.float32
    assert batch.labels.shape == (64, NUM_CLASSES) and batch.labels.dtype == torch.float32
    assert batch.masks.shape == (64, NUM_CLASSES, 64, 64) and batch.masks.dtype == torch.bool
    assert batch.images.min() >= 0 and batch.images.max() <= 1
    assert set(batch.labels.unique().tolist()) <= {0.0, 1.0}
    small = generate(3, seed=1, size=48)
    assert small.images.shape == (3, 3, 48, 48) and small.masks.shape == (3, NUM_CLASSES, 48, 48)


def test_determinism_and_seed_dependence() -> None:
    a, b, c = generate(16, seed=3), generate(16, seed=3), generate(16, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)
    # Chunking only bounds memory.
    assert torch.equal(generate(16, seed=3, chunk=5).images, a.images)
    # A prefix of the same seed is not reused by a different seed stream.
    assert not torch.equal(generate(16, seed=TRAIN_SEED_BASE).images, generate(16, seed=HELDOUT_SEED).images)


def test_masks_exactly_for_labelled_classes(batch) -> None:
    nonempty = batch.masks.flatten(2).any(2)
    assert torch.equal(nonempty, batch.labels.bool())
    counts = batch.labels.sum(1)
    assert set(counts.unique().tolist()) == {1.0, 2.0}  # the default mixes one and two objects


def test_object_count_forcing_and_disjoint_masks() -> None:
    two = generate(40, seed=11, two_objects=True)
    one = generate(40, seed=11, two_objects=False)
    assert (two.labels.sum(1) == 2).all()  # two labels => two *different* classes
    assert (one.labels.sum(1) == 1).all()
    overlap = two.masks.long().sum(1) > 1
    assert not overlap.any()


def test_masks_sit_on_the_object_pixels() -> None:
    # With no clutter the background is one flat colour, so object pixels are exactly the
    # pixels that differ from it (up to antialiased borders just outside the mask).
    b = generate(32, seed=5, clutter=0.0)
    for i in range(len(b)):
        bg = b.images[i, :, 0, 0]
        if b.masks[i, :, 0, 0].any():
            continue
        differs = (b.images[i] - bg[:, None, None]).abs().sum(0) > 0.05
        m = b.masks[i].any(0)
        assert (differs & m).sum() >= 0.97 * m.sum()  # mask pixels carry object colour
        # Pixels that differ but lie outside the mask are only the antialiased rim (a few
        # partially covered pixels near thin tips such as the star's or crescent's).
        rim = torch.nn.functional.max_pool2d(m[None, None].float(), 7, 1, 3)[0, 0].bool()
        assert not (differs & ~rim).any()
        assert (differs & ~m).sum() <= 0.5 * m.sum()


def test_classes_are_balanced_and_objects_vary() -> None:
    b = generate(600, seed=123)
    freq = b.labels.mean(0)
    assert (freq > 0.1).all() and (freq < 0.2).all()
    area = b.masks.flatten(2).sum(2)[b.labels.bool()].float()
    assert area.min() > 60 and area.max() < 900
    # Position is class-independent: centroids spread over the whole image for each class.
    ys = torch.arange(64).float()
    for c in range(NUM_CLASSES):
        m = b.masks[:, c][b.labels[:, c].bool()].float()
        cy = (m.sum(2) * ys).sum(1) / m.sum((1, 2))
        assert cy.min() < 22 and cy.max() > 42


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        generate(2, seed=0, clutter=1.5)
    with pytest.raises(ValueError):
        generate(2, seed=0, size=16)
    assert len(generate(0, seed=0)) == 0
