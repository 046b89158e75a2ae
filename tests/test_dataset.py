"""``libragrad-fx attribute`` over a folder of generated PNGs: the maps are the library's, a stopped or
killed run resumes to the same bytes, two torchrun processes (gloo) write the same files as one, a
different command is refused, unreadable images are rows, index files and targets work."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from libragrad_fx.bench.folder import write_image_folder
from libragrad_fx.cli import main
from libragrad_fx.dataset.shards import read_tensors

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 20
SMALL_RUN = ["--shard-size", "6", "--batch-size", "4", "--workers", "0", "--threads", "1", "--no-progress"]
# the subprocess runs: more, smaller shards (a kill lands between two of them), a DataLoader worker, overlays
PROCESS_RUN = ["--shard-size", "3", "--batch-size", "2", "--workers", "1", "--threads", "1", "--png", "3",
               "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """20 generated images in class folders, one file that is not an image, one truncated PNG."""
    root = tmp_path_factory.mktemp("shapes") / "images"
    paths = write_image_folder(root, N_IMAGES, seed=7, masks=root.parent / "masks")
    (root / "00_circle" / "zz_broken.png").write_bytes(b"not an image at all")
    (root / "02_triangle" / "zz_truncated.png").write_bytes(paths[0].read_bytes()[:150])
    return root


def attribute(folder: Path, out: Path, *extra: str, model: str = "vit") -> int:
    return main(["attribute", model, "--data", str(folder), "--out", str(out), *SMALL_RUN, *extra])


def index_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def stored_maps(out: Path) -> torch.Tensor:
    shards = sorted((out / "shards").glob("*.safetensors"))
    return torch.cat([read_tensors(p)["maps"] for p in shards])


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def same_except_command(a: Path, b: Path) -> None:
    fa, fb = files(a), files(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        if name == "manifest.json":
            ma, mb = json.loads(fa[name]), json.loads(fb[name])
            ma.pop("command"), mb.pop("command")
            assert ma == mb
        else:
            assert fa[name] == fb[name], name


@pytest.fixture(scope="module")
def fullgrad_run(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fullgrad") / "out"
    assert attribute(folder, out, "--method", "fullgrad") == 0
    return out


def test_maps_index_and_shards_are_the_librarys_fullgrad(folder, fullgrad_run):
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    import libragrad_fx as lf
    from libragrad_fx.bench import models

    rows = index_rows(fullgrad_run)
    expected_paths = sorted((str(p.relative_to(folder)) for p in folder.rglob("*.png")), key=lambda p: Path(p).parts)
    assert [r["path"] for r in rows] == expected_paths and [int(r["sample"]) for r in rows] == list(range(22))
    assert sorted(p.name for p in (fullgrad_run / "shards").iterdir()) == [f"{k:06d}.safetensors" for k in range(4)]
    maps = stored_maps(fullgrad_run)
    assert maps.dtype == torch.float16 and maps.shape == (22, 64, 64)

    broken = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(broken) == {"00_circle/zz_broken.png", "02_triangle/zz_truncated.png"}
    assert broken["00_circle/zz_broken.png"].startswith("UnidentifiedImageError")
    assert "truncated" in broken["02_triangle/zz_truncated.png"]
    good = [i for i, r in enumerate(rows) if not r["error"]]
    bad = [i for i, r in enumerate(rows) if r["error"]]
    assert torch.isnan(maps[bad]).all() and torch.isfinite(maps[good]).all()
    assert all(r["target"] == "" and r["value"] == "" for r in rows if r["error"])

    # the same images through the library directly: the stored maps are FullGrad's, rounded to float16
    model = models.load("vit")
    x = torch.stack([to_tensor(Image.open(folder / rows[i]["path"]).convert("RGB")) for i in good])
    heat, parts = lf.attr.FullGrad(lf.transform(model, x[:1])).attribute_with_totals(x)
    expected = heat.sum(1)
    eps16 = torch.finfo(torch.float16).eps
    torch.testing.assert_close(maps[good].float(), expected, rtol=eps16, atol=1e-5 * float(expected.abs().max()))
    assert [int(rows[i]["target"]) for i in good] == parts.target.tolist()
    torch.testing.assert_close(torch.tensor([float(rows[i]["value"]) for i in good]), parts.output,
                               rtol=1e-5, atol=1e-5)
    errors = torch.tensor([float(rows[i]["completeness_error"]) for i in good])
    assert float(errors.max()) < 1e3 * torch.finfo(torch.float32).eps  # complete to float32 precision
    shard = read_tensors(fullgrad_run / "shards" / "000000.safetensors")
    assert shard["sample"].tolist() == list(range(6))
    assert shard["target"].tolist() == [int(r["target"]) if r["target"] else -1 for r in rows[:6]]


def test_manifest_records_the_command_and_a_different_command_is_refused(folder, fullgrad_run, capsys):
    manifest = json.loads((fullgrad_run / "manifest.json").read_text())
    assert manifest["command"][:3] == ["libragrad-fx", "attribute", "vit"]
    assert manifest["settings"]["method"] == "fullgrad" and manifest["source"]["samples"] == 22
    assert set(manifest["versions"]) >= {"torch", "timm", "libragrad-fx"}
    before = files(fullgrad_run)
    capsys.readouterr()
    assert attribute(folder, fullgrad_run, "--method", "ixg") == 2
    err = capsys.readouterr().err
    assert "different command" in err and "method" in err and "--overwrite" in err and err.count("\n") == 1
    assert files(fullgrad_run) == before  # nothing touched
    orphans = fullgrad_run.parent / "orphans"
    shutil.copytree(fullgrad_run / "shards", orphans / "shards")
    assert attribute(folder, orphans, "--method", "fullgrad") == 2  # shards of an unknown run
    assert "no manifest.json" in capsys.readouterr().err
    # the same command again finds every shard done and writes the same files
    assert attribute(folder, fullgrad_run, "--method", "fullgrad") == 0
    assert files(fullgrad_run) == before


def test_overwrite_replaces_a_different_run(folder, tmp_path):
    out = tmp_path / "out"
    assert attribute(folder, out, "--method", "fullgrad", "--png", "2") == 0
    assert (out / "png" / "000000.png").is_file()
    assert attribute(folder, out, "--method", "ixg", "--overwrite") == 0
    assert json.loads((out / "manifest.json").read_text())["settings"]["method"] == "input_x_gradient"
    assert not (out / "png").exists()
    rows = index_rows(out)
    assert len(rows) == 22
    good = [float(r["completeness_error"]) for r in rows if not r["error"]]
    assert len(good) == 20  # IxG adds up to its own sum: the index reports how far from the logit


def test_a_stopped_run_resumes_to_the_same_files(folder, fullgrad_run, tmp_path):
    out = tmp_path / "out"
    assert attribute(folder, out, "--method", "fullgrad", "--max-shards", "1") == 0
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["000000.safetensors"]
    assert not (out / "index.csv").exists()
    # what a run killed mid-write leaves: a partial file, never read as a shard, deleted on resume
    (out / "shards" / "000001.safetensors.partial.12345").write_bytes(b"half a shard")
    assert attribute(folder, out, "--method", "fullgrad") == 0
    assert not list((out / "shards").glob("*partial*"))
    same_except_command(out, fullgrad_run)


def _process(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cli(folder: Path) -> list[str]:
    # the same command line everywhere (a relative --out), so even the manifests are byte-identical
    return ["attribute", "vit", "--data", str(folder), "--out", "out", *PROCESS_RUN]


def _in_process(folder: Path, cwd: Path) -> int:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return main(_cli(folder))
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """One uninterrupted single-process run."""
    cwd = tmp_path_factory.mktemp("reference")
    assert _in_process(folder, cwd) == 0
    return cwd / "out"


def test_a_killed_run_resumes_to_identical_files(folder, reference, tmp_path):
    proc = _process(["-m", "libragrad_fx", *_cli(folder)], tmp_path)
    first = tmp_path / "out" / "shards" / "000000.safetensors"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    written = sorted((tmp_path / "out" / "shards").glob("*.safetensors"))
    assert first.exists() and len(written) < 8 and not (tmp_path / "out" / "index.csv").exists(), \
        "the run must be killed between its first and its last shard"
    assert _in_process(folder, tmp_path) == 0  # the same command again
    assert files(tmp_path / "out") == files(reference)


def test_two_torchrun_processes_write_the_files_of_one(folder, reference, tmp_path):
    run = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "libragrad_fx",
           *_cli(folder)]
    proc = _process(run, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.count("samples this run") == 1  # rank 0 alone reports
    assert files(tmp_path / "out") == files(reference)


def test_index_files_and_target_columns(folder, tmp_path, capsys):
    images = sorted(p for p in folder.rglob("0*.png"))[:3]
    rows = [{"path": os.path.relpath(p, tmp_path), "label": "1", "cls": c} for p, c in zip(images, ("2", "x", "7"))]
    with open(tmp_path / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "cls"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("index.csv", "index.jsonl"):
        out = tmp_path / f"out-{name}"
        assert attribute(tmp_path / name, out, "--method", "ixg", "--target", "cls") == 0
        got = index_rows(out)
        assert [r["path"] for r in got] == [r["path"] for r in rows]
        assert [r["target"] for r in got] == ["2", "", "7"]
        assert "column 'cls' holds 'x'" in got[1]["error"]
        out = tmp_path / f"label-{name}"
        assert attribute(tmp_path / name, out, "--method", "gradient", "--target", "label") == 0
        assert [r["target"] for r in index_rows(out)] == ["1", "1", "1"]
    capsys.readouterr()
    (tmp_path / "texts.jsonl").write_text(json.dumps({"text": "a sentence", "label": 1}) + "\n")
    assert attribute(tmp_path / "texts.jsonl", tmp_path / "texts") == 2
    assert "hf:" in capsys.readouterr().err
    assert attribute(tmp_path / "index.csv", tmp_path / "bad", "--target", "nope") == 2
    assert "not a column" not in (err := capsys.readouterr().err) and "columns: path, label, cls" in err


def test_targets_from_folders_and_out_of_range(folder, tmp_path, capsys):
    out = tmp_path / "label"
    assert attribute(folder, out, "--method", "gradient", "--target", "label") == 0
    rows = [r for r in index_rows(out) if not r["error"]]
    assert all(int(r["target"]) == int(r["path"][:2]) for r in rows)  # 00_circle -> class 0 ...
    capsys.readouterr()
    assert attribute(folder, tmp_path / "far", "--target", "10") == 2
    assert "out of range" in capsys.readouterr().err
    assert not (tmp_path / "far").exists()  # nothing written: the corrected command is not "a different one"


def test_preprocessing_is_timms_eval_transform(tmp_path):
    import timm
    from PIL import Image

    from libragrad_fx.cli.specs import load_model
    from libragrad_fx.dataset.preprocess import from_model

    loaded = load_model("timm:vit_small_patch16_224", model_kwargs={"img_size": 64, "depth": 1})
    path = tmp_path / "wide.png"
    generator = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(90, 130, 3, generator=generator) * 255).byte().numpy()).save(path)
    pre = from_model(loaded)
    assert pre.origin == "timm" and pre.size == (64, 64) and pre.crop_pct == 0.9 and pre.interpolation == "bicubic"
    config = timm.data.resolve_data_config(model=loaded.model)
    config["input_size"] = (3, 64, 64)
    expected = timm.data.create_transform(**config)(Image.open(path).convert("RGB"))
    assert torch.equal(pre.normalize(pre.picture(str(path))), expected)


def test_bfloat16_autocast_on_cpu_keeps_the_forward_and_stays_complete(folder, tmp_path):
    """The rule ops and pruned ops under autocast: forward identical to the model's under the same
    autocast (a BEiT's float32 relative-position mask must be cast for the pruned attention as autocast
    casts it for F.scaled_dot_product_attention), backward inside or outside it, FullGrad complete to
    bfloat16 precision."""
    import timm

    import libragrad_fx as lf
    from libragrad_fx.bench import models
    from libragrad_fx.bench.data import generate

    x = generate(4, seed=3).images
    eps = torch.finfo(torch.bfloat16).eps
    torch.manual_seed(0)
    beit = timm.models.beit.Beit(img_size=64, patch_size=8, num_classes=10, embed_dim=64, depth=2, num_heads=4,
                                 use_abs_pos_emb=False, use_rel_pos_bias=True, init_values=0.1).eval()
    with torch.no_grad():  # timm starts biases and the relative table at zero, where a missing cast goes unseen
        for p in beit.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for name, model in [(n, models.load(n)) for n in models.names()] + [("beit (random)", beit)]:
        gm = lf.transform(model, x[:1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(gm(x), model(x)), name
            heat, parts = lf.attr.FullGrad(gm).attribute_with_totals(x)
        rel = (parts.attributed - parts.output.double()).abs() / parts.output.double().abs()
        assert float(rel.median()) < 4 * eps, name
        full = lf.attr.FullGrad(gm).attribute(x, target=parts.target)
        cosine = torch.nn.functional.cosine_similarity(heat.flatten(1), full.flatten(1))
        assert float(cosine.min()) > 0.95, name
        xs = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = gm(xs)
        (grad,) = torch.autograd.grad(y[:, 0].sum(), xs)  # backward outside autocast, as torch recommends
        assert torch.isfinite(grad).all(), name
    out = tmp_path / "bf16"
    assert attribute(folder, out, "--precision", "bfloat16", model="mixer") == 0
    errors = [float(r["completeness_error"]) for r in index_rows(out) if not r["error"]]
    assert len(errors) == 20 and sorted(errors)[10] < 4 * eps


def test_folder_source_order_labels_and_what_it_skips(tmp_path):
    from libragrad_fx.dataset.sources import read_source

    for rel in ("b/2.png", "b/10.jpg", "a/x/1.PNG", "root.webp", ".hidden/3.png", "a/.4.png", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    source = read_source(str(tmp_path))
    assert [s.path for s in source.samples] == ["a/x/1.PNG", "b/10.jpg", "b/2.png", "root.webp"]
    assert source.classes == ["a", "b", "empty"]  # every subfolder is a class, as in ImageFolder
    assert [s.label_index for s in source.samples] == [0, 1, 1, None]
    assert source.describe()["fingerprint"] == read_source(str(tmp_path)).describe()["fingerprint"]
