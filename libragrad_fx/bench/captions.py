"""Captions of the generator's images, and which captions are true of which image.

A caption names objects: its shape (a class of :mod:`libragrad_fx.bench.data`, or the word ``shape``
for any), optionally its colour (a hue word for the colour the generator drew) and, on two-object
images, its position relative to the other object (``on the left`` / ``right`` / ``top`` /
``bottom``). A two-object image is described by both objects joined by ``and``, or by one of them.

A caption is *true of* an image when every object it names is a distinct object of the image with
the named properties ("a star" is true of every image holding a star; "a red star and a cross" of
those holding a red star and a cross). The contrastive loss of ``tools/train_clip.py`` counts every
caption true of an image as a positive for it (:func:`true_of`), not only the one drawn for it.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .data import CLASSES, Objects

__all__ = ["COLOURS", "POSITIONS", "WORDS", "Specs", "caption_text", "class_prompts", "colour_names", "describe",
           "positions", "prompt", "specs_of_classes", "true_of"]

COLOURS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "magenta", "white")
"""Hue words: six 60-degree hue sectors centred on the primaries and secondaries; ``white`` for
saturation below 0.25 (the generator's objects are always light)."""
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
WORDS: tuple[str, ...] = ("a", "an", "and", "on", "the", "shape", *CLASSES, *COLOURS, *POSITIONS)
"""Every word a caption can hold."""

ANY = -1
"""A property the caption leaves open (any colour, any position, any shape)."""
NONE = -2
"""No object (a one-object caption's second slot)."""

_WHITE_BELOW = 0.25


@dataclass
class Specs:
    """Objects named by a batch of captions, or held by a batch of images: two slots each.

    shape, colour, position: (n, 2) int64 indices into ``CLASSES``, ``COLOURS``, ``POSITIONS``; ``ANY``
    where a caption leaves the property open (an image's single object has position ``ANY``: it has no
    other object to be left of), ``NONE`` in an empty slot's shape.
    """

    shape: Tensor
    colour: Tensor
    position: Tensor

    def __len__(self) -> int:
        return self.shape.shape[0]


def colour_names(rgb: Tensor) -> Tensor:
    """The index in :data:`COLOURS` of each RGB colour (..., 3) in [0, 1] -> (...) int64."""
    flat = rgb.reshape(-1, 3).tolist()
    index = []
    for r, g, b in flat:
        hue, sat, _ = colorsys.rgb_to_hsv(r, g, b)
        index.append(len(COLOURS) - 1 if sat < _WHITE_BELOW else int(((hue * 360 + 30) % 360) // 60))
    return torch.tensor(index, dtype=torch.int64).reshape(rgb.shape[:-1])


def positions(centres: Tensor, present: Tensor) -> Tensor:
    """Each object's position relative to the other (index in :data:`POSITIONS`), along the axis where
    they are further apart; ``ANY`` for one-object images. centres (n, 2, 2) (x, y), present (n, 2)."""
    d = centres[:, 1] - centres[:, 0]  # from the first object to the second
    horizontal = d[:, 0].abs() >= d[:, 1].abs()
    first = torch.where(horizontal, torch.where(d[:, 0] > 0, 0, 1), torch.where(d[:, 1] > 0, 2, 3))
    second = first ^ 1  # left <-> right, top <-> bottom
    out = torch.stack([first, second], 1)
    return torch.where(present[:, 1:2], out, torch.full_like(out, ANY))


def describe(objects: Objects) -> Specs:
    """What the images hold, every property filled in (the ground truth captions are checked against)."""
    shape = torch.where(objects.present, objects.classes, torch.full_like(objects.classes, NONE))
    return Specs(shape, colour_names(objects.colours), positions(objects.centres, objects.present))


def specs_of_classes(classes: Tensor) -> Specs:
    """One-object captions naming only a shape ("a star"), one per class index."""
    n = classes.shape[0]
    shape = torch.stack([classes.long(), torch.full((n,), NONE)], 1)
    return Specs(shape, torch.full((n, 2), ANY), torch.full((n, 2), ANY))


def sample(truth: Specs, rng: np.random.Generator, *, p_colour: float = 0.5, p_position: float = 0.5,
           p_one_of_two: float = 0.2, p_shape_word: float = 0.1) -> Specs:
    """A random caption of each image (a partial description of ``truth``, so always true of it).

    Each object keeps its colour with ``p_colour``; a two-object image names both positions with
    ``p_position`` and only one (random) object with ``p_one_of_two``; an object named by colour or
    position is called ``shape`` instead of its class with ``p_shape_word``. The order of two objects
    is random.
    """
    n = len(truth)
    shape, colour, position = truth.shape.clone(), truth.colour.clone(), truth.position.clone()
    two = shape[:, 1] != NONE
    swap = torch.as_tensor(rng.random(n) < 0.5) & two
    for t in (shape, colour, position):
        t[swap] = t[swap].flip(1)
    colour[torch.as_tensor(rng.random((n, 2)) >= p_colour)] = ANY
    position[torch.as_tensor(rng.random(n) >= p_position)] = ANY
    one = torch.as_tensor(rng.random(n) < p_one_of_two) & two
    shape[one, 1], colour[one, 1], position[one, 1] = NONE, ANY, ANY
    described = (colour != ANY) | (position != ANY)
    generic = torch.as_tensor(rng.random((n, 2)) < p_shape_word) & described & (shape != NONE)
    shape[generic] = ANY
    return Specs(shape, colour, position)


def _phrase(shape: int, colour: int, position: int) -> str:
    noun = "shape" if shape == ANY else CLASSES[shape]
    words = ([COLOURS[colour]] if colour != ANY else []) + [noun]
    article = "an" if words[0][0] in "aeiou" else "a"
    text = " ".join([article, *words])
    return text + (f" on the {POSITIONS[position]}" if position != ANY else "")


def caption_text(specs: Specs) -> list[str]:
    """The captions as text ("a red star on the left and a cross on the right")."""
    out = []
    for s, c, p in zip(specs.shape.tolist(), specs.colour.tolist(), specs.position.tolist()):
        out.append(" and ".join(_phrase(s[j], c[j], p[j]) for j in range(2) if s[j] != NONE))
    return out


def prompt(cls: int) -> str:
    """The zero-shot prompt of a class: its shape with an article ("a star", "an arrow")."""
    return _phrase(cls, ANY, ANY)


def class_prompts() -> list[str]:
    """The zero-shot prompts of every class, in class order."""
    return [prompt(c) for c in range(len(CLASSES))]


def _slot_match(caption: Specs, j: int, truth: Specs, k: int) -> Tensor:
    """[captions, images] bool: the caption's object j is the image's object k."""
    def eq(a: Tensor, b: Tensor) -> Tensor:
        return (a[:, j, None] == ANY) | (a[:, j, None] == b[None, :, k])

    present = truth.shape[None, :, k] != NONE
    return present & eq(caption.shape, truth.shape) & eq(caption.colour, truth.colour) & \
        eq(caption.position, truth.position)


def true_of(captions: Specs, truth: Specs) -> Tensor:
    """[captions, images] bool: the caption names distinct objects of the image with the named properties."""
    m = {(j, k): _slot_match(captions, j, truth, k) for j in range(2) for k in range(2)}
    one = captions.shape[:, 1, None] == NONE
    first = m[0, 0] | m[0, 1]
    both = (m[0, 0] & m[1, 1]) | (m[0, 1] & m[1, 0])
    return torch.where(one, first, both)
