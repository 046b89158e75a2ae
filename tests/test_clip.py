"""The bundled CLIP and its text-prompted maps (libragrad_fx.bench.clip, clip_model, captions, clip_bench).

What the captions say and which images they are true of; the model loads offline and encodes; its
held-out zero-shot accuracy reproduces the card's and meets the goal; one map per (image, prompt)
pair, FullGrad complete for the cosine similarity; the CLI's ``explain clip`` and ``bench --models clip``.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import libragrad_fx
import tool_scripts
from libragrad_fx.bench import captions, clip, models
from libragrad_fx.bench.data import CLASSES, HELDOUT_SEED, generate, objects
from libragrad_fx.cli import main

GOAL = 0.90
"""Zero-shot classification by prompt on held-out one-object images."""


@pytest.fixture(scope="module")
def model():
    return models.load("clip")


@pytest.fixture(scope="module")
def pairs():
    return generate(4, seed=HELDOUT_SEED + 2, two_objects=True)


# --------------------------------------------------------------------------- captions and scenes


def test_objects_are_what_generate_drew() -> None:
    batch, found = generate(40, seed=3), objects(40, seed=3)
    assert torch.equal(found.present.sum(1).float(), batch.labels.sum(1))
    for i in range(40):
        for j in range(2):
            if found.present[i, j]:
                mask = batch.masks[i, found.classes[i, j]]
                ys, xs = torch.nonzero(mask, as_tuple=True)
                centroid = torch.stack([xs.float().mean(), ys.float().mean()]) + 0.5
                assert (centroid - found.centres[i, j]).abs().max() < 0.5 * found.radii[i, j]
                # the object's pixels carry its colour (up to the generator's pixel noise)
                assert (batch.images[i][:, mask].median(1).values - found.colours[i, j]).abs().max() < 0.15


def test_captions_are_true_of_their_image_and_say_what_it_holds() -> None:
    truth = captions.describe(objects(200, seed=5))
    specs = captions.sample(truth, np.random.default_rng(0))
    true = captions.true_of(specs, truth)
    assert true.diagonal().all()
    assert 0 < true.float().mean() < 0.2  # but not of every image
    text = captions.caption_text(specs)
    assert all(set(t.split()) <= set(captions.WORDS) for t in text)
    full = captions.caption_text(truth)
    two = truth.shape[:, 1] != captions.NONE
    assert all(" and " in full[i] and " on the " in full[i] for i in torch.nonzero(two).flatten().tolist())
    prompts = captions.true_of(captions.specs_of_classes(torch.arange(len(CLASSES))), truth)
    holds = torch.zeros(len(CLASSES), len(truth), dtype=torch.bool)
    for k in range(2):
        present = truth.shape[:, k] >= 0
        holds[truth.shape[present, k], torch.nonzero(present).flatten()] = True
    assert torch.equal(prompts, holds)  # "a star" is true of exactly the images holding a star


def test_positions_and_colours() -> None:
    centres = torch.tensor([[[10.0, 30.0], [50.0, 34.0]], [[30.0, 50.0], [28.0, 8.0]]])
    where = captions.positions(centres, torch.ones(2, 2, dtype=torch.bool))
    assert [[captions.POSITIONS[i] for i in row] for row in where.tolist()] == [["left", "right"], ["bottom", "top"]]
    rgb = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.2, 1.0], [0.9, 0.9, 0.3], [0.9, 0.85, 0.8]])
    assert [captions.COLOURS[i] for i in captions.colour_names(rgb).tolist()] == ["red", "blue", "yellow", "white"]
    assert captions.class_prompts()[CLASSES.index("arrow")] == "an arrow"


# --------------------------------------------------------------------------- the model


def test_loads_offline_and_encodes(model, pairs, monkeypatch) -> None:
    import timm.models._hub as hub

    monkeypatch.setattr(hub, "download_cached_file", lambda *a, **k: pytest.fail("network access"))
    assert "clip" in models.names("clip") and "clip" not in models.names()
    loaded = models.load("clip")
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    meta = models.card("clip")
    image = model.encode_image(pairs.images)
    text = model.encode_text(["a star", "A red shape on the left."])
    assert image.shape == (4, meta["text"]["embed_dim"]) and text.shape == (2, meta["text"]["embed_dim"])
    assert torch.allclose(model.encode_text(["a star"]), text[:1], atol=1e-6)  # padding does not leak
    sims = model.similarity(pairs.images, ["a star", "a cross"])
    assert sims.shape == (4, 2) and sims.abs().max() <= 1 + 1e-6
    assert (models.WEIGHTS_DIR / "clip.safetensors").stat().st_size < 8e6


@pytest.mark.parametrize("prompts, match", [(["a dog"], "unknown word 'dog'"), (["..."], "no words"),
                                            ([" ".join(["a"] * 40)], "at most"), ([], "no prompts")])
def test_bad_prompts_are_one_line_errors(model, prompts, match) -> None:
    with pytest.raises(ValueError, match=match) as error:
        model.encode_text(prompts)
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text("a star")


def test_zero_shot_accuracy_reproduces_the_card_and_meets_the_goal(model) -> None:
    held = models.card("clip")["heldout"]
    report = clip.zero_shot_report(model, held["n"], held["seed"])
    for key in ("one_object_accuracy", "two_object_exact", "colour_accuracy", "position_accuracy"):
        assert report[key] == pytest.approx(held[key], abs=2e-3), key
    assert report["one_object_accuracy"] >= GOAL
    # a fresh sample of the same distribution, too (200 images: standard error ~0.02)
    assert clip.zero_shot_report(model, 200, HELDOUT_SEED + 1)["one_object_accuracy"] >= GOAL - 0.04


def test_card_is_the_default_recipe_and_its_tower_the_bundled_classifier(model) -> None:
    """``tools/train_clip.py --out DIR`` retrains what ships: the card's recipe is the script's default, and the
    image tower's body is the bundled classifier it names (locked while training), unless that file changed since."""
    import hashlib
    trainer = tool_scripts.load("train_clip")
    meta = models.card("clip")
    assert {k: meta[k] for k in trainer.RECIPE} == trainer.RECIPE
    assert meta["command"] == "python tools/train_clip.py --out libragrad_fx/bench/weights"
    tower = meta["image_tower"]
    parent = models.WEIGHTS_DIR / tower["from"]
    if hashlib.sha256(parent.read_bytes()).hexdigest() != tower["sha256"]:
        pytest.skip(f"{tower['from']} is not the file the CLIP was trained from (retrained since)")
    body = models.load(parent.stem).state_dict()
    for name, value in model.visual.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(value, body[name]), name


def test_untrained_model_fails_the_goal(pairs) -> None:
    from libragrad_fx.bench.clip_model import build

    torch.manual_seed(0)
    untrained = build(models.card("clip")).eval()
    assert clip.zero_shot_report(untrained, 100, HELDOUT_SEED + 1)["one_object_accuracy"] < 0.5


# --------------------------------------------------------------------------- prompted maps


def test_prompt_maps_one_per_pair(model, pairs) -> None:
    prompts = ["a star", "a cross", "a red shape", "a star"]
    for method in ("fullgrad", "ixg", "gradcam", "rollout", "gae"):
        maps = clip.prompt_maps(model, pairs.images, prompts, method=method)
        assert maps.shape == (4, 64, 64) and torch.isfinite(maps).all(), method
    single = clip.prompt_maps(model, pairs.images[1:2], "a cross")
    assert torch.allclose(single[0], clip.prompt_maps(model, pairs.images, prompts)[1], atol=1e-6)
    with pytest.raises(ValueError, match="3 prompts for 4 images"):
        clip.prompt_maps(model, pairs.images, prompts[:3])
    with pytest.raises(ValueError, match="unknown method"):
        clip.prompt_maps(model, pairs.images, "a star", method="lime")
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        clip.prompt_maps(model, pairs.images[0], "a star")


def test_readout_is_the_cosine_similarity_and_the_transform_keeps_it(model, pairs) -> None:
    head = clip.readout(model, ["a star", "a cross"])
    with torch.no_grad():
        assert torch.allclose(head(pairs.images), model.similarity(pairs.images, ["a star", "a cross"]), atol=1e-6)
        gm = libragrad_fx.transform(head, pairs.images[:1])
        assert torch.equal(gm(pairs.images), head(pairs.images))
    rules = {(r.op, r.rule) for r in gm.libragrad_report.rewritten}
    assert ("F.normalize", "x / ||x||.detach()") in rules  # the unit-norm rule on the final normalisation
    assert not gm.libragrad_report.unclassified


def test_fullgrad_is_complete_for_the_similarity(model, pairs) -> None:
    head = copy.deepcopy(clip.readout(model, ["a star", "a cross", "a white shape on the left"])).double()
    x, target = pairs.images.double(), [0, 1, 2, 0]
    eps = torch.finfo(torch.float64).eps
    libragrad = libragrad_fx.completeness(head, x, target=target, preset="libragrad")
    assert float(libragrad.rel_error.max()) < 1e4 * eps, libragrad
    vanilla = libragrad_fx.completeness(head, x, target=target, preset="vanilla")
    assert float(vanilla.rel_error.max()) > 1e-3  # the vanilla gradient is not complete here


# --------------------------------------------------------------------------- command line


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_clip_writes_the_picture(capsys, tmp_path) -> None:
    out = tmp_path / "clip.png"
    code, text, err = run_cli(capsys, "explain", "clip", "--random", "--prompt", "a star", "--prompt", "a cross",
                              "--compare", "--out", str(out), "--json")
    assert code == 0, err
    data = json.loads(text)
    assert [(e["prompt"], e["preset"]) for e in data["explanations"]] == [
        ("a star", "vanilla"), ("a cross", "vanilla"), ("a star", "libragrad"), ("a cross", "libragrad")]
    assert all(e["rel_error"] < 1e-4 for e in data["explanations"] if e["preset"] == "libragrad")
    assert out.stat().st_size > 1000

    from PIL import Image

    picture = tmp_path / "shape.png"
    Image.fromarray((generate(1, seed=9).images[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(picture)
    code, text, err = run_cli(capsys, "explain", "clip", "--image", str(picture), "--prompt", "a ring",
                              "--method", "gae", "--out", str(out))
    assert code == 0, err
    assert "'a ring', similarity" in text and f"wrote {out}" in text


@pytest.mark.parametrize("argv, message", [
    (["clip", "--random", "--prompt", "a dog"], "unknown word 'dog'"),
    (["clip", "--random"], "pass --prompt"),
    (["clip", "--random", "--prompt", "a star", "--target", "3"], "--target does not apply"),
    (["clip", "--image", "/no/such/file.png", "--prompt", "a star"], "cannot read image"),
    (["vit", "--random", "--prompt", "a star"], "--prompt applies to a CLIP model"),
])
def test_explain_clip_bad_input(capsys, tmp_path, argv, message) -> None:
    code, _, err = run_cli(capsys, "explain", *argv, "--out", str(tmp_path / "x.png"))
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_bench_clip_scores_prompted_maps(capsys, tmp_path) -> None:
    code, _, err = run_cli(capsys, "bench", "--models", "clip", "--n", "3", "--methods", "fullgrad,gae",
                           "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    import csv

    with open(tmp_path / "results.csv") as f:
        rows = {(r["method"], r["variant"]): r for r in csv.DictReader(f)}
    assert set(rows) == {("FullGrad", "vanilla"), ("FullGrad", "libragrad"), ("GAE", "baseline")}
    assert all(int(r["n_targets"]) == 6 and int(r["n_pairs"]) == 6 for r in rows.values())
    assert float(rows["FullGrad", "libragrad"]["compl_rel_median"]) < 1e-4
    assert float(rows["FullGrad", "vanilla"]["compl_rel_median"]) > 1e-3
    assert all(0 <= float(r["disc_share"]) <= 1 for r in rows.values())
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("Prompt-conditioned faithfulness on the bundled CLIP") and "sigmoid" not in text


def test_inspect_and_check_take_the_class_prompt_readout(capsys) -> None:
    code, text, err = run_cli(capsys, "inspect", "clip", "--format", "json")
    assert code == 0, err
    data = json.loads(text)
    assert {"op": "F.normalize", "rule": "x / ||x||.detach()"}.items() <= next(
        r for r in data["rewritten"] if r["op"] == "F.normalize").items()
    assert data["unclassified"] == []
    code, text, err = run_cli(capsys, "check", "clip")
    assert code == 0 and "all checks hold" in text, text + err
