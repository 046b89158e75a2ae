"""Bundled bench models: load offline, eval mode, logits shape, and real held-out accuracy."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tool_scripts
from libragrad_fx.bench import models
from libragrad_fx.bench.data import HELDOUT_SEED, NUM_CLASSES, generate
from libragrad_fx.bench.evaluate import (TWO_OBJECT_EXACT, TWO_OBJECT_RECALL, detection, evaluate,
                                         two_object_heldout)

REQUIRED = {"vit", "eva02", "mixer", "deit3", "siglip"}
# Bundled models whose cards fall short of the detection requirement (card numbers: two-object
# recall / exact set on 500 held-out images). Strict xfail: a retrained model that meets the
# requirement turns these into failures until it is taken off this list.
BELOW_REQUIREMENT: dict[str, str] = {}


def _held_to_requirement(names):
    def mark(n: str):
        return pytest.mark.xfail(strict=True, reason=f"below the requirement: {BELOW_REQUIREMENT[n]}")

    return [pytest.param(n, marks=mark(n)) if n in BELOW_REQUIREMENT else n for n in sorted(names)]


@pytest.fixture(scope="module")
def heldout():
    # A seed disjoint from the training stream (TRAIN_SEED_BASE + step, step < 10**6) and
    # from the one used for the model cards, so this is a fresh sample.
    return generate(200, seed=HELDOUT_SEED + 1)


@pytest.fixture(scope="module")
def two_objects():
    # Fresh two-object images (the cards' detection numbers use HELDOUT_SEED itself).
    return two_object_heldout(400, seed=HELDOUT_SEED + 1)


def test_names_and_unknown_name() -> None:
    assert REQUIRED <= set(models.names())
    assert REQUIRED <= set(models.classifiers())
    with pytest.raises(ValueError, match="vit"):
        models.load("no-such-model")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_model_loads_offline_and_classifies(name: str, heldout, monkeypatch) -> None:
    # Any attempt to reach a hub would go through these; make them fail loudly.
    import timm.models._hub as hub

    monkeypatch.setattr(hub, "download_cached_file", lambda *a, **k: pytest.fail("network access"))
    torch.manual_seed(0)
    model = models.load(name)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    meta = models.card(name)
    assert meta["timm_class"].startswith("timm.models.")
    assert type(model).__name__ == meta["timm_class"].rsplit(".", 1)[1]
    out = model(heldout.images[:4])
    assert out.shape == (4, NUM_CLASSES)
    # Logits, not probabilities: some must be negative and unbounded by [0, 1].
    assert (out < 0).any()

    rep = evaluate(model, heldout)
    assert _beats_constant(rep, heldout), rep


def _beats_constant(rep: dict, batch) -> bool:
    """Clearly better than any constant predictor on this sample.

    Mean per-class accuracy alone is weak here: predicting "absent" everywhere already scores
    1 - label density (~0.85). So require (a) beating that all-negative score and (b) mean
    balanced accuracy >= 0.57, where every constant predictor scores 0.5 (with 200 images the
    standard error of the class-averaged balanced accuracy is ~0.02).
    """
    all_negative = 1 - float(batch.labels.mean())
    return rep["mean_per_class_accuracy"] > all_negative + 0.01 and rep["mean_balanced_accuracy"] >= 0.57


def _consistent_with(rate: float, target: float, trials: int) -> bool:
    """A fresh sample's ``rate`` is not significantly below ``target`` (one-sided, 3 standard errors).

    The card states the model's numbers on its own held-out images; a fresh sample can only confirm
    them up to sampling error. 3 standard errors: a model that meets the target fails this about once
    in 700 runs, and one that misses it by 4 standard errors (0.07 exact match, 0.03 recall on 400
    images) passes about once in 40.
    """
    return rate >= target - 3 * math.sqrt(target * (1 - target) / trials)


@pytest.mark.parametrize("name", _held_to_requirement(REQUIRED))
def test_card_meets_the_detection_requirement(name: str) -> None:
    """Each card's own held-out numbers (re-measured by ``test_summary_reproduces_the_cards``)."""
    two = models.card(name)["heldout_two_objects"]
    assert two["seed"] == HELDOUT_SEED and two["two_objects"] is True and two["n"] >= 400
    assert two["object_recall"] >= TWO_OBJECT_RECALL, two
    assert two["exact_match"] >= TWO_OBJECT_EXACT, two


@pytest.mark.parametrize("name", _held_to_requirement(REQUIRED))
def test_model_detects_both_objects_on_fresh_images(name: str, two_objects) -> None:
    rep = detection(models.load(name), two_objects)
    objects = int(two_objects.labels.sum())
    assert _consistent_with(rep["object_recall"], TWO_OBJECT_RECALL, objects), rep
    assert _consistent_with(rep["exact_match"], TWO_OBJECT_EXACT, len(two_objects)), rep


def test_detection_check_can_fail(two_objects) -> None:
    # The fresh-sample check must reject a model that sees only some of the objects: the label
    # prior (a random model) and a bundled model with one class switched off both fail it.
    meta = models.card("vit")
    torch.manual_seed(0)
    rand = models.build(meta["timm_class"], meta["kwargs"]).eval()
    rep = detection(rand, two_objects)
    assert not _consistent_with(rep["object_recall"], TWO_OBJECT_RECALL, 2 * len(two_objects)), rep
    eva = models.load("eva02")

    def blind(x: torch.Tensor) -> torch.Tensor:
        return eva(x).index_fill(1, torch.tensor([0]), -1.0)  # never predicts "circle"

    rep = detection(blind, two_objects)
    assert not _consistent_with(rep["exact_match"], TWO_OBJECT_EXACT, len(two_objects)), rep


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_card_is_complete(name: str) -> None:
    meta = models.card(name)
    for key in ("timm_class", "kwargs", "init_seed", "command", "steps", "batch", "lr", "train_seconds",
                "train_cpu_seconds", "heldout", "heldout_two_objects", "train_data"):
        assert key in meta, key
    assert meta["heldout"]["seed"] == HELDOUT_SEED
    assert meta["heldout"]["n"] >= 1000
    path = models.WEIGHTS_DIR / f"{name}.safetensors"
    assert path.stat().st_size < 3e6
    json.dumps(meta)  # serialisable


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_model_is_fx_traceable(name: str, heldout) -> None:
    model = models.load(name)
    gm = torch.fx.symbolic_trace(model)
    x = heldout.images[:2]
    assert torch.allclose(gm(x), model(x), atol=1e-5)


def _trainer():
    """tools/train_bench_models.py as a module."""
    return tool_scripts.load("train_bench_models")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_input_normalisation_folds_into_the_stem(name: str, heldout) -> None:
    """Models trained on standardised images ship as stock timm modules taking raw images: the
    normalisation is folded into the stem convolution (tools/train_bench_models.py --normalize)."""
    trainer = _trainer()
    fold_normalisation, input_stats = trainer.fold_normalisation, trainer.input_stats

    arch = models.ARCHITECTURES[name]
    torch.manual_seed(0)
    model = models.build(arch["timm_class"], arch["kwargs"]).eval()
    mean, std = input_stats(64)
    assert bool((std > 0.1).all()) and bool((mean > 0.1).all())  # the images are uncentred
    x = heldout.images[:4]
    with torch.no_grad():
        expected = model((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
        fold_normalisation(model, mean, std)
        torch.testing.assert_close(model(x), expected, atol=2e-5, rtol=1e-4)


def test_normalisation_refuses_a_stem_it_cannot_fold() -> None:
    fold_normalisation = _trainer().fold_normalisation
    padded = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1))
    with pytest.raises(ValueError, match="padded"):
        fold_normalisation(padded, torch.zeros(3), torch.ones(3))


def test_summary_reproduces_the_cards() -> None:
    """The README's model table (``python -m libragrad_fx.bench.models``) re-measures each card's held-out
    numbers on the card's own images; the shipped weights must give the card's numbers again."""
    table = models.summary().splitlines()
    assert len(table) == 2 + len(models.classifiers())
    for name, row in zip(models.classifiers(), table[2:]):
        meta = models.card(name)
        held, two = meta["heldout"], meta["heldout_two_objects"]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == name
        assert float(cells[5]) == pytest.approx(held["mean_per_class_accuracy"], abs=6e-4), row
        assert float(cells[6]) == pytest.approx(held["mean_balanced_accuracy"], abs=6e-4), row
        assert float(cells[8]) == pytest.approx(two["object_recall"], abs=6e-4), row
        assert float(cells[9]) == pytest.approx(two["exact_match"], abs=6e-4), row


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_default_recipe_is_the_shipped_one(name: str) -> None:
    """``tools/train_bench_models.py --model NAME`` with no other flag retrains what ships (README's claim)."""
    meta = models.card(name)
    trainer = _trainer()
    recipe = trainer.RECIPES[name]
    assert trainer.recipe_of(meta, recipe) == recipe  # cards older than an option: its default
    assert meta["kwargs"] == json.loads(json.dumps(models.ARCHITECTURES[name]["kwargs"]))
    assert not meta["stopped_by_time_limit"] and meta["steps_run"] == meta["steps"]


def test_resumed_training_equals_an_uninterrupted_run(tmp_path) -> None:
    """A run paused at a checkpoint and started again ends with the same weights (long trainings on a
    shared machine run in pieces)."""
    from safetensors.torch import load_file

    main = _trainer().main
    tiny = ["--model", "vit", "--arch", json.dumps({"embed_dim": 16, "depth": 1, "num_heads": 2}), "--steps", "4",
            "--batch", "4", "--warmup", "2", "--no-normalize", "--two-object-fraction", "0.5", "--ema", "0.9",
            "--threads", "1", "--eval-n", "8", "--eval-two-n", "8", "--log-every", "100"]
    assert main([*tiny, "--out", str(tmp_path / "a")]) == 0
    ck = ["--out", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "b.ckpt"), "--checkpoint-every", "1"]
    assert main([*tiny, *ck, "--pause-after", "3"]) == 0
    assert not (tmp_path / "b" / "vit.safetensors").exists()
    assert main([*tiny, *ck]) == 0
    a, b = load_file(str(tmp_path / "a" / "vit.safetensors")), load_file(str(tmp_path / "b" / "vit.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    card = json.loads((tmp_path / "b" / "vit.json").read_text())
    assert card["steps_run"] == 4 and card["heldout_two_objects"]["n"] == 8


def test_a_recipe_with_a_base_trains_the_base_first(tmp_path, monkeypatch) -> None:
    """A recipe that continues a base run reproduces the whole chain from one command; the card records it."""
    trainer = _trainer()
    tiny = dict(trainer.RECIPES["vit"], steps=2, batch=4, warmup=1, normalize=False, teacher=None,
                kd_weight=0.0)
    monkeypatch.setitem(trainer.RECIPES, "vit", dict(tiny, two_object_fraction=1.0, base=dict(tiny, steps=3)))
    arch = ["--arch", json.dumps({"embed_dim": 16, "depth": 1, "num_heads": 2})]
    small = ["--threads", "1", "--eval-n", "8", "--eval-two-n", "8", "--log-every", "100"]
    assert trainer.main(["--model", "vit", *arch, *small, "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "vit.json").read_text())
    assert card["init_from"]["steps_run"] == 3 and card["steps_run"] == 2
    assert '"steps": 3' in card["init_from"]["command"]
    # The continuation's images follow the base run's seeds instead of revisiting them.
    assert "TRAIN_SEED_BASE + 3 + step" in card["train_data"]
    assert (tmp_path / "vit-base" / "vit.safetensors").is_file()


def test_a_base_run_trained_with_the_same_recipe_is_reused(tmp_path, monkeypatch, capsys) -> None:
    """A second run of a recipe with a base reuses the base run already in <out>/<model>-base/; a
    changed base recipe trains it again."""
    trainer = _trainer()
    tiny = dict(trainer.RECIPES["deit3"], steps=2, batch=4, warmup=1)
    monkeypatch.setitem(trainer.RECIPES, "deit3", dict(tiny, base=dict(tiny["base"], steps=3, batch=4, warmup=1)))
    arch = ["--arch", json.dumps({"embed_dim": 16, "depth": 1, "num_heads": 2})]
    small = ["--threads", "1", "--eval-n", "8", "--eval-two-n", "8", "--log-every", "100"]
    for _ in range(2):
        assert trainer.main(["--model", "deit3", *arch, *small, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("base run first") == 1 and "reusing the base run" in out
    base_card = json.loads((tmp_path / "deit3-base" / "deit3.json").read_text())
    assert base_card["kwargs"]["embed_dim"] == 16 and base_card["steps_run"] == 3
    card = json.loads((tmp_path / "deit3.json").read_text())
    assert card["init_from"]["steps_run"] == 3 and "TRAIN_SEED_BASE + 3 + step" in card["train_data"]
    monkeypatch.setitem(trainer.RECIPES, "deit3", dict(tiny, base=dict(tiny["base"], steps=4, batch=4, warmup=1)))
    assert trainer.main(["--model", "deit3", *arch, *small, "--out", str(tmp_path)]) == 0
    assert "base run first" in capsys.readouterr().out
    assert json.loads((tmp_path / "deit3-base" / "deit3.json").read_text())["steps_run"] == 4
