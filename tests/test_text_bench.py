"""The text benchmark: generated evidence, the bundled classifier, token deletion, the bench and the demo."""
from __future__ import annotations

import io
import json
import math

import pytest
import torch

pytest.importorskip("transformers")

from libragrad_fx.cli import main  # noqa: E402
from libragrad_fx.text import bench, data  # noqa: E402
from libragrad_fx.text import model as bundled  # noqa: E402


def test_labels_follow_the_evidence_and_decoys_do_not_count():
    s = data.generate(300, seed=5)
    assert s.texts == data.generate(300, seed=5).texts
    for text, label, evidence, negated in zip(s.texts, s.labels, s.evidence, s.negated):
        words = text.split()
        keyword = [w for w in words if w in data.POSITIVE + data.NEGATIVE]
        assert len(keyword) == 1 and words[evidence[-1]] == keyword[0]
        polarity = keyword[0] in data.POSITIVE
        assert label == int(polarity ^ negated)
        if negated:  # the negator is directly before the keyword, or one intensifier before it
            assert len(evidence) == 2 and words[evidence[0]] in data.NEGATORS
            assert evidence[1] - evidence[0] == 1 or words[evidence[0] + 1] in data.INTENSIFIERS
        else:
            assert len(evidence) == 1 and words[evidence[0] - 1] not in data.NEGATORS + data.INTENSIFIERS or \
                words[evidence[0] - 1] in data.INTENSIFIERS and words[evidence[0] - 2] not in data.NEGATORS
    assert 0.25 < sum(s.negated) / len(s) < 0.45
    assert sum(sum(w in data.NEGATORS for w in t.split()) > int(n) for t, n in zip(s.texts, s.negated)) > 100


def test_bundled_classifier_reproduces_its_card_and_loads_as_an_hf_directory(capsys):
    card = bundled.card()
    tm = bundled.load()
    assert tm.task == "classifier" and tm.labels == dict(enumerate(data.LABELS))
    held = card["heldout"]
    assert bundled.accuracy(tm, data.generate(held["n"], seed=held["seed"])) == pytest.approx(held["accuracy"],
                                                                                              abs=1e-4)
    assert held["accuracy"] >= 0.9
    code = main(["explain", f"hf:{bundled.path()}", "--text", "the plot was not bad", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["target"] == "positive" and out["completeness"] <= 1e-4


def test_deleting_the_evidence_first_hurts_more_than_deleting_it_last():
    tm = bundled.load()
    enc = bench.encode(tm.tokenizer, data.generate(40, seed=7))
    truth = enc.evidence.double()
    curves = {name: bench.deletion(tm.model, enc.ids, enc.mask, enc.content, scores, enc.labels,
                                   tm.tokenizer.mask_token_id, torch.Generator().manual_seed(0))
              for name, scores in (("evidence", truth), ("reverse", -truth))}
    for name, c in curves.items():
        assert c["mif_prob"].shape == (40, 11)
        full = c["mif_prob"][:, 0]
        assert torch.equal(full, c["lif_prob"][:, 0])  # nothing deleted yet: the same sentences
    mif = bench._area(curves["evidence"]["mif_prob"], curves["evidence"]["fractions"]).mean()
    lif = bench._area(curves["evidence"]["lif_prob"], curves["evidence"]["fractions"]).mean()
    assert mif < lif - 0.2


def test_bench_rows_and_libragrad_fullgrad_completeness(tmp_path):
    methods = [m for m in bench.METHODS if m.key in ("fullgrad", "gae")]
    result = bench.run(bench.Config(n=6, batch=3, ig_steps=2, sg_samples=2), methods)
    rows = {(r["method"], r["variant"]): r for r in result.rows}
    assert set(rows) == {("FullGrad", "vanilla"), ("FullGrad", "libragrad"), ("GAE", "baseline")}
    assert rows[("FullGrad", "libragrad")]["compl_rel_median"] <= 1e-4
    assert rows[("FullGrad", "vanilla")]["compl_rel_median"] > 1e-2
    assert math.isnan(rows[("GAE", "baseline")]["compl_rel_median"])
    for r in result.rows:
        assert 0 <= r["ap"] <= 1 and abs(r["prob_srg"] - (r["prob_lif"] - r["prob_mif"])) < 1e-12
    from libragrad_fx.text.bench_output import write

    files = write(result, bench.Config(n=6), tmp_path)
    assert "| FullGrad | libragrad |" in (tmp_path / "results.md").read_text()
    assert all(f.exists() for f in files)


def test_text_demo_prints_one_sentence_both_backwards():
    from rich.console import Console

    from libragrad_fx.text.demo import run

    buffer = io.StringIO()
    run(console=Console(file=buffer, width=200, highlight=False))
    out = buffer.getvalue()
    assert out.startswith("sentence: ") and "evidence: " in out
    assert out.count("vanilla  fullgrad") == 1 and out.count("libragrad  fullgrad") == 1
    assert out.count("evidence AP") == 4


def test_attnlrp_without_lxt_is_one_clear_error(tmp_path):
    from libragrad_fx.text.attnlrp import LXTUnavailable, relevance

    bare = tmp_path / "python"
    bare.write_text("#!/bin/sh\nexit 1\n")
    bare.chmod(0o755)
    with pytest.raises(LXTUnavailable, match="lxt is not installed"):
        relevance(str(bundled.path()), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
                  torch.zeros(1, dtype=torch.long), python=str(bare))


def test_attnlrp_uses_lxts_bert_rules_where_lxt_is_present():
    """lxt's monkey-patched BERT keeps the forward; its attention rule (uniform, q/k gradients /4) is not
    LibraGrad's (q, k detached), so its IxG differs from LibraGrad's."""
    from libragrad_fx.bench.attnlrp import LXTUnavailable, find_python
    from libragrad_fx.text.attnlrp import relevance
    from libragrad_fx.text.attribution import TokenScorer
    from libragrad_fx.text.readouts import ClassLogits

    try:
        python = find_python()
    except LXTUnavailable as error:
        pytest.skip(str(error))
    tm = bundled.load()
    enc = bench.encode(tm.tokenizer, data.generate(4, seed=3))
    rel, total, logit, _ = relevance(str(tm.path), enc.ids, enc.mask, enc.labels, python=python)
    embeds = tm.embed(enc.ids)
    ours = TokenScorer(ClassLogits(tm.model), embeds, enc.mask).scores("input_x_gradient", embeds, enc.mask,
                                                                        enc.labels)
    assert torch.allclose(logit.double(), ours.value, atol=1e-5)
    assert rel.shape == ours.scores.shape and torch.equal(total, rel.sum(1))
    assert not torch.allclose(rel, ours.scores, atol=1e-3)
