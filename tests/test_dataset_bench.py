"""``libragrad-fx bench --model MODEL --data SOURCE --masks DIR``: the benchmark's scores on an image folder,
per sample equal to the metrics run directly on the same maps, resumable like ``attribute``."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from libragrad_fx.bench.folder import write_image_folder
from libragrad_fx.cli import main

N = 12
SEED = 11
RUN = ["--methods", "ixg,fullgrad", "--shard-size", "4", "--batch", "4", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-data")
    write_image_folder(root / "images", N, seed=SEED, masks=root / "masks")
    return root / "images", root / "masks"


def bench(shapes, out: Path, *extra: str) -> int:
    images, masks = shapes
    return main(["bench", "--model", "vit", "--data", str(images), "--masks", str(masks), "--mask-values", "class",
                 "--out", str(out), *RUN, *extra])


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bench_out(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench-out") / "out"
    assert bench(shapes, out) == 0
    return out


def test_scores_are_the_metrics_of_the_librarys_maps(shapes, bench_out):
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    import libragrad_fx as lf
    from libragrad_fx import metrics
    from libragrad_fx.bench import models
    from libragrad_fx.bench.data import generate

    images, _ = shapes
    samples = read(bench_out / "samples.csv")
    rows = [r for r in samples if r["method"] == "FullGrad" and r["variant"] == "libragrad"]
    assert len(samples) == 4 * N and len(rows) == N
    order = sorted((p for p in images.rglob("*.png")), key=lambda p: p.relative_to(images).parts)
    assert [r["path"] for r in rows] == [str(p.relative_to(images)) for p in order]
    x = torch.stack([to_tensor(Image.open(p).convert("RGB")) for p in order])
    target = torch.tensor([int(r["target"]) for r in rows])
    assert target.tolist() == [int(r["label"][:2]) for r in rows]  # the folder's class is the target

    # the generator drew these images (file name: its index): its masks are the ones written as mask images
    truth = generate(N, seed=SEED)
    masks = truth.masks[torch.tensor([int(p.stem) for p in order]), target]
    model = models.load("vit")
    explainer = lf.attr.FullGrad(lf.transform(model, x[:1]))
    srg, ap, point = [], [], []
    for start in range(0, N, 4):  # the run's batches
        sl = slice(start, start + 4)
        heat = explainer.attribute(x[sl], target=target[sl]).sum(1)
        deletion = metrics.deletion_curves(model, x[sl], heat, target[sl], patch_size=8, output="sigmoid")
        srg.append(deletion.auc["prob"]["srg"])
        ap.append(metrics.segmentation_ap(heat, masks[sl]))
        point.append(metrics.pointing_game(heat, masks[sl]))
    for key, expected in (("prob_srg", srg), ("seg_ap", ap), ("pointing", point)):
        got = torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)
        torch.testing.assert_close(got, torch.cat(expected).double(), rtol=1e-5, atol=1e-6, msg=key)

    table = {(r["method"], r["variant"]): r for r in read(bench_out / "results.csv")}
    assert set(table) == {("IxG", "vanilla"), ("IxG", "libragrad"), ("FullGrad", "vanilla"), ("FullGrad", "libragrad")}
    mean = sum(float(r["prob_srg"]) for r in rows) / N
    assert abs(float(table["FullGrad", "libragrad"]["prob_srg"]) - mean) < 1e-5
    assert float(table["FullGrad", "libragrad"]["compl_rel_median"]) < 1e-4  # complete; the vanilla one is not
    assert float(table["FullGrad", "vanilla"]["compl_rel_median"]) > 1e-2
    pairs = [r for r in rows if r["disc_share"]]
    assert pairs and len(pairs) == int((truth.labels.sum(1) == 2).sum())  # two-object images: discrimination
    for name in ("results.md", "deletion.png", "manifest.json"):
        assert (bench_out / name).is_file()


def test_a_stopped_bench_resumes_to_the_same_scores(shapes, bench_out, tmp_path):
    out = tmp_path / "out"
    assert bench(shapes, out, "--max-shards", "2") == 0
    assert not (out / "results.csv").exists()
    assert bench(shapes, out) == 0
    assert (out / "samples.csv").read_bytes() == (bench_out / "samples.csv").read_bytes()
    for k in range(3):
        name = f"shards/{k:06d}.safetensors"
        assert (out / name).read_bytes() == (bench_out / name).read_bytes()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "ms_per_target"} for r in rows]  # noqa: E731
    assert strip(read(out / "results.csv")) == strip(read(bench_out / "results.csv"))


def test_bench_data_usage_errors(shapes, tmp_path, capsys):
    images, _ = shapes
    capsys.readouterr()
    cases = [(["--data", str(images), "--out", str(tmp_path / "a")], "--model"),
             (["--data", str(images), "--model", "vit"], "--out"),
             (["--data", str(images), "--model", "vit", "--models", "vit", "--out", str(tmp_path / "b")], "--models"),
             (["--data", str(images), "--model", "vit", "--jobs", "2", "--out", str(tmp_path / "c")], "torchrun"),
             (["--data", str(images), "--model", "vit", "--masks", str(tmp_path / "none"), "--out",
               str(tmp_path / "d")], "--masks")]
    for argv, word in cases:
        assert main(["bench", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1, err


def test_masks_are_found_imagenet_s_style_and_decoded(tmp_path):
    import numpy as np
    from PIL import Image

    from libragrad_fx.dataset.loader import mask_file
    from libragrad_fx.dataset.preprocess import decode_mask
    from libragrad_fx.dataset.sources import Sample

    ids = np.array([[0, 1], [300, 1000]])  # background, class 1, class 300, ImageNet-S's "ignored"
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    path = tmp_path / "validation-segmentation" / "n01443537" / "ILSVRC2012_val_00004677.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(rgb, mode="RGB").save(path)
    sample = Sample("n01443537/ILSVRC2012_val_00004677.JPEG", "unused")
    assert mask_file(tmp_path / "validation-segmentation", sample) == path
    assert mask_file(tmp_path, sample) is None
    assert decode_mask(Image.open(path)).tolist() == ids.tolist()
    grey = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 3]], dtype=np.uint8), mode="L").save(grey)
    assert decode_mask(Image.open(grey)).tolist() == [[0, 3]]
