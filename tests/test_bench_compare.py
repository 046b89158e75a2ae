"""``libragrad-fx bench`` and ``libragrad-fx demo`` end to end on a few images: they run, write what
they say, and the numbers are sane (no tuned values: only ranges and vanilla-vs-LibraGrad orders of
magnitude that the method guarantees)."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from libragrad_fx.bench import faithfulness
from libragrad_fx.bench.data import generate
from libragrad_fx.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_targets_are_every_present_class() -> None:
    batch = generate(12, seed=5)
    rows = faithfulness.targets_of(batch.labels, batch.masks)
    assert len(rows.target) == int(batch.labels.sum())
    for r in range(len(rows.target)):
        i, c = int(rows.image[r]), int(rows.target[r])
        assert batch.labels[i, c] == 1
        assert torch.equal(rows.mask[r], batch.masks[i, c])
        others = [k for k in batch.labels[i].nonzero().flatten().tolist() if k != c]
        expected = batch.masks[i, others[0]] if others else torch.zeros_like(rows.mask[r])
        assert torch.equal(rows.other[r], expected)
        assert bool(rows.pair[r]) == bool(others)


def test_unknown_method_and_model(capsys) -> None:
    with pytest.raises(ValueError, match="valid: gradient"):
        faithfulness.resolve_methods(["nope"])
    assert main(["bench", "--models", "nope", "--n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "valid: " in err[0]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    fake = tmp_path_factory.mktemp("tools") / "no-lxt-python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    out = tmp_path_factory.mktemp("bench")
    code = main(["bench", "--n", "4", "--models", "vit,mixer", "--methods", "ixg,fullgrad,gradcam,rollout,gae,attnlrp",
                 "--ig-steps", "2", "--sg-samples", "2", "--batch", "4", "--out", str(out), "--no-progress",
                 "--lxt-python", str(fake)])
    assert code == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return out, rows, fake


def test_bench_writes_what_it_says(bench_run, capsys) -> None:
    out, rows, _ = bench_run
    for name in ("results.csv", "results.md", "run.json", "deletion_vit.png", "deletion_mixer.png",
                 "examples_vit.png", "examples_mixer.png"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    methods = {(r["model"], r["method"], r["variant"]) for r in rows}
    for model in ("vit", "mixer"):
        for label in ("IxG", "FullGrad", "GradCAM"):
            assert {(model, label, "vanilla"), (model, label, "libragrad")} <= methods
        assert (model, "AttnLRP", "baseline") in methods
    text = (out / "results.md").read_text()
    assert "### vit" in text and "### mixer" in text
    assert "AttnLRP skipped" in text  # no lxt: a row of n/a and a note, not an error
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["n"] == 4 and info["config"]["baseline"] == "zero"


def _row(rows, model, method, variant):
    return next(r for r in rows if (r["model"], r["method"], r["variant"]) == (model, method, variant))


def test_bench_numbers_are_sane(bench_run) -> None:
    _, rows, _ = bench_run
    for r in rows:
        if r["method"] in ("Rollout", "GAE") and r["model"] == "mixer" or r["method"] == "AttnLRP":
            assert math.isnan(float(r["seg_ap"]))  # n/a: no attention / no lxt
            continue
        for key in ("seg_ap", "pointing", "prob_mif", "prob_lif", "disc_share"):
            v = float(r[key])
            assert math.isnan(v) and key == "disc_share" or 0.0 <= v <= 1.0, (r["method"], key, v)
        assert -1.0 <= float(r["prob_srg"]) <= 1.0
        assert int(r["n_targets"]) >= 4
    for model in ("vit", "mixer"):
        lg = float(_row(rows, model, "FullGrad", "libragrad")["compl_rel_median"])
        van = float(_row(rows, model, "FullGrad", "vanilla")["compl_rel_median"])
        assert lg < 1e-4  # complete to float precision (docs/METHOD.md)
        assert van > 100 * lg  # GELU and LayerNorm break it without the rules
        assert math.isnan(float(_row(rows, model, "GradCAM", "libragrad")["compl_rel_median"]))


def test_demo(tmp_path, capsys) -> None:
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    text = capsys.readouterr().out
    assert f"wrote {out}" in text
    lines = [line.split() for line in text.splitlines() if "FullGrad" in line and "libragrad" in line.split()[:3]]
    assert len(lines) == 2  # both classes
    for parts in lines:
        assert float(parts[6]) < 1e-4  # relative completeness error of LibraGrad FullGrad
    assert main(["demo", "--out", str(tmp_path / "demo.jpg")]) == 2
    assert main(["demo", "--out", str(out), "--model", "nope"]) == 2


def test_rerun_of_one_model_is_deterministic_and_merges(bench_run, tmp_path) -> None:
    from libragrad_fx.bench.compare import merge

    out, rows, fake = bench_run
    again = tmp_path / "vit"
    assert main(["bench", "--n", "4", "--models", "vit", "--methods", "ixg,fullgrad,gradcam,rollout,gae,attnlrp",
                 "--ig-steps", "2", "--sg-samples", "2", "--batch", "4", "--out", str(again), "--no-progress",
                 "--lxt-python", str(fake)]) == 0
    merged = tmp_path / "merged"
    import shutil

    shutil.copytree(out, merged)
    merge(merged, again)
    with open(merged / "results.csv") as f:
        after = list(csv.DictReader(f))
    assert [(r["model"], r["method"], r["variant"]) for r in after] == [(r["model"], r["method"], r["variant"])
                                                                       for r in rows]
    for a, b in zip(after, rows):
        for key in ("prob_srg", "seg_ap", "pointing", "compl_rel_median"):
            assert a[key] == b[key]  # same images, same seeds: the same numbers


def test_a_model_measured_on_its_own_joins_the_results(bench_run, tmp_path) -> None:
    """Merging a run of a model the results lack adds its rows and its name, merging again is stable, and
    dropping it restores the results."""
    import shutil

    from libragrad_fx.bench.compare import drop, merge

    out, rows, fake = bench_run
    extra = tmp_path / "deit3"
    assert main(["bench", "--n", "4", "--models", "deit3", "--methods", "ixg", "--ig-steps", "2", "--sg-samples", "2",
                 "--batch", "4", "--out", str(extra), "--no-progress", "--lxt-python", str(fake)]) == 0
    merged = tmp_path / "merged"
    shutil.copytree(out, merged)
    for _ in range(2):
        merge(merged, extra)
    info = json.loads((merged / "run.json").read_text())
    assert info["models"][-1] == "deit3" and len(info["models"]) == len({r["model"] for r in rows}) + 1
    with open(merged / "results.csv") as f:
        after = list(csv.DictReader(f))
    assert [r for r in after if r["model"] != "deit3"] == [r for r in rows]
    assert {(r["method"], r["variant"]) for r in after if r["model"] == "deit3"} == {("IxG", "vanilla"),
                                                                                   ("IxG", "libragrad")}
    assert (merged / "examples_deit3.png").is_file() and "### deit3" in (merged / "results.md").read_text()
    # and a model taken out again leaves the results as they were (a model no longer bundled)
    drop(merged, ["deit3"])
    with open(merged / "results.csv") as f:
        assert list(csv.DictReader(f)) == rows
    assert json.loads((merged / "run.json").read_text())["models"] == json.loads((out / "run.json").read_text())["models"]
    assert not (merged / "examples_deit3.png").exists() and "deit3" not in (merged / "results.md").read_text()
    with pytest.raises(ValueError, match="no results for"):
        drop(merged, ["deit3"])


def test_the_probability_readout_explains_the_sigmoid_probability(tmp_path) -> None:
    """``--readout prob`` (the reference implementation's default readout): every map explains sigmoid(logit);
    the head keeps its ordinary backward, so FullGrad adds up to the probability only up to that head's
    linearisation error, measured here against the probability, not the logit."""
    out = tmp_path / "prob"
    code = main(["bench", "--n", "3", "--models", "vit", "--methods", "ixg,fullgrad,ig", "--ig-steps", "2",
                 "--batch", "4", "--out", str(out), "--no-progress", "--readout", "prob"])
    assert code == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["readout"] == "prob"
    assert "sigmoid probability" in (out / "results.md").read_text()
    # FullGrad under the prob readout, against the logit's complete decomposition
    maps = faithfulness._Maps("vit", *_bundled("vit"), faithfulness.Config(readout="prob"))
    x, t = _bundled("vit")[1], torch.tensor([0, 1])
    method = next(m for m in faithfulness.METHODS if m.key == "fullgrad" and m.variant == "libragrad")
    _, total = maps(method, x, t, seed=0)
    with torch.no_grad():
        p = torch.sigmoid(maps.model(x).double())[torch.arange(2), t]
        logit = maps.model(x).double()[torch.arange(2), t]
    # sigmoid's backward is kept, so the attribution is sigmoid'(z) * (what the logit's FullGrad sums to)
    torch.testing.assert_close(total, p * (1 - p) * logit, rtol=1e-4, atol=1e-6)
    assert all(0.0 <= float(r["seg_ap"]) <= 1.0 for r in rows)


def _bundled(name: str):
    from libragrad_fx.bench import models

    return models.load(name), generate(2, seed=7).images


def test_the_probability_readout_is_refused_where_it_does_not_apply(tmp_path, capsys) -> None:
    for extra in (["--models", "clip"], ["--text"], ["--model", "vit", "--data", str(tmp_path), "--out", str(tmp_path / "o")]):
        assert main(["bench", "--n", "1", "--readout", "prob", *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--readout" in err[0], err


def test_methods_measured_apart_join_the_results_in_table_order(bench_run, tmp_path) -> None:
    """A run of further methods on the same models adds their rows, in the order one run of all of them writes;
    adding the same rows twice, or a model the results lack, is refused."""
    import shutil

    from libragrad_fx.bench.compare import add_methods

    out, rows, fake = bench_run
    extra = tmp_path / "more"
    assert main(["bench", "--n", "4", "--models", "vit,mixer", "--methods", "gradient,smoothgrad", "--ig-steps", "2",
                 "--sg-samples", "2", "--batch", "4", "--out", str(extra), "--no-progress",
                 "--lxt-python", str(fake)]) == 0
    merged = tmp_path / "merged"
    shutil.copytree(out, merged)
    add_methods(merged, extra)
    with open(merged / "results.csv") as f:
        after = [(r["model"], r["method"], r["variant"]) for r in csv.DictReader(f)]
    with open(extra / "results.csv") as f:
        added = [(r["model"], r["method"], r["variant"]) for r in csv.DictReader(f)]
    assert sorted(after) == sorted([(r["model"], r["method"], r["variant"]) for r in rows] + added)
    order = [(m.label, m.variant) for m in faithfulness.METHODS]
    for model in ("vit", "mixer"):
        mine = [order.index((m, v)) for mm, m, v in after if mm == model]
        assert mine == sorted(mine)
    info = json.loads((merged / "run.json").read_text())
    assert {"vanilla:Gradient", "libragrad:SmoothGrad", "vanilla:IxG"} <= set(info["methods"])
    with pytest.raises(ValueError, match="already has"):
        add_methods(merged, extra)
    lone = tmp_path / "lone"
    assert main(["bench", "--n", "4", "--models", "deit3", "--methods", "gradient", "--ig-steps", "2",
                 "--sg-samples", "2", "--batch", "4", "--out", str(lone), "--no-progress",
                 "--lxt-python", str(fake)]) == 0
    with pytest.raises(ValueError, match="no results for"):
        add_methods(merged, lone)
