"""Maps for people: token grids, sum-preserving upsampling, PNG overlays that read without a manual."""
from __future__ import annotations

import matplotlib.image
import pytest
import torch
from archs import build

import libragrad_fx as lf
from libragrad_fx.attr import maps


def test_layouts():
    grid, image = (4, 4), (32, 32)
    assert maps.layout((2, 17, 64), 2, grid, image) == maps.Layout("tokens", grid, 1, 1)
    assert maps.layout((2, 21, 64), 2, grid, image) == maps.Layout("tokens", grid, 1, 5)  # class + 4 registers
    assert maps.layout((2, 64, 16), 2, grid, image) == maps.Layout("tokens", grid, 2, 0)  # Mixer's token MLP
    assert maps.layout((2, 64, 8, 8), 2, grid, image) == maps.Layout("nchw", (8, 8))
    assert maps.layout((2, 8, 8, 64), 2, grid, image) == maps.Layout("nhwc", (8, 8))
    assert maps.layout((2, 64), 2, grid, image) is None  # pooled features
    assert maps.layout((2, 1, 64), 2, grid, image) is None  # one pooled token
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float).reshape(2, 17, 3)
    grid_map, prefix = maps.to_grid(tokens, maps.layout(tokens.shape, 2, grid, image))
    torch.testing.assert_close(grid_map[0, 0, 1], tokens[0, 2].sum())
    torch.testing.assert_close(prefix, tokens[:, 0].sum(-1))


@pytest.mark.parametrize("size", [(32, 32), (30, 45)])
def test_spread_keeps_the_total(size):
    grid_map = torch.randn(2, 4, 5, dtype=torch.float64)
    pixels = maps.spread(grid_map, size)
    assert pixels.shape == (2, *size)
    torch.testing.assert_close(pixels.sum((1, 2)), grid_map.sum((1, 2)))


def test_aggregate_gives_each_cell_its_total_back():
    grid_map = torch.randn(2, 4, 4, dtype=torch.float64)
    pixels = maps.spread(grid_map, (32, 32))
    assert torch.equal(pixels[:, :8, :8], grid_map[:, :1, :1].expand(2, 8, 8) / 64)
    torch.testing.assert_close(maps.aggregate(pixels[:, None].expand(2, 3, 32, 32) / 3, (4, 4)), grid_map)


def test_per_sample_finds_the_batch():
    values = torch.randn(6, 5)  # three windows per sample, folded into the batch
    torch.testing.assert_close(maps.per_sample(values, 2), values.reshape(2, -1).sum(1))
    moved = torch.randn(3, 2, 4)  # [3, B, ...]
    torch.testing.assert_close(maps.per_sample(moved, 2), moved.sum((0, 2)))
    with pytest.raises(ValueError, match="no batch dimension"):
        maps.per_sample(torch.randn(5, 7), 2)


def _legends(figure) -> list[str]:
    return [ax.get_xlabel() for ax in figure.axes if ax.get_xlabel()]


def test_a_fullgrad_map_rendered_to_png(tmp_path):
    model, x = build("vit")
    full = lf.attr.FullGrad(model).attribute(x, target=1)
    path = tmp_path / "fullgrad.png"
    figure = lf.viz.overlay(x[0], full[0], path, title="FullGrad (LibraGrad), target 1", signed=True)
    png = matplotlib.image.imread(path)
    width, height = figure.get_size_inches() * figure.dpi
    assert png.shape[:2] == (round(height), round(width)) and png.shape[2] in (3, 4)
    assert png[..., :3].std() > 0.05, "the image must not be constant"
    # it reads on its own: the image beside the map, one title, a colour bar saying what red and blue mean
    assert sum(bool(ax.images) for ax in figure.axes) == 2
    assert figure.get_suptitle() == "FullGrad (LibraGrad), target 1"
    assert _legends(figure) == [lf.viz.SIGNED_LEGEND] and "red" in lf.viz.SIGNED_LEGEND
    map_axes = [ax for ax in figure.axes if len(ax.images) == 2][0]
    assert map_axes.images[1].get_cmap().name == "bwr"  # the map over the image
    assert map_axes.images[0].get_array().ndim == 2  # the image under it in grey: its own reds are not the map's

    grid_path = tmp_path / "gradcam.png"
    cam_figure = lf.viz.overlay(x[1], lf.attr.GradCAM(model).attribute(x, target=1)[1], grid_path)
    cam = matplotlib.image.imread(grid_path)
    assert cam.shape[1] == png.shape[1] and cam[..., :3].std() > 0.05
    assert _legends(cam_figure) == [lf.viz.WEIGHT_LEGEND]
    cam_axes = [ax for ax in cam_figure.axes if len(ax.images) == 2][0]
    assert cam_axes.images[1].get_cmap().name == "inferno"  # a weight map: no red that could read as "positive"
