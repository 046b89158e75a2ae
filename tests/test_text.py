"""Text attribution on saved Hugging Face directories (libragrad_fx.text): loading, readouts, completeness.

Tiny random models saved with ``save_pretrained`` and a word-level tokenizer saved beside them
(tests/text_models.py); nothing is downloaded.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import libragrad_fx as lf  # noqa: E402
import libragrad_fx.text as lt  # noqa: E402
from libragrad_fx.core.errors import UsageError  # noqa: E402
from text_models import save  # noqa: E402

CASES = {  # kind -> (text, explain kwargs)
    "classifier": ("the movie was not good", {"target": "positive"}),
    "causal-lm": ("the movie was", {}),
    "masked-lm": ("the movie was [MASK] good", {}),
    "sentence-encoder": ("the movie was good", {"pair": "a great plot"}),
}


@pytest.fixture(autouse=True)
def grad_mode_is_left_as_it_was():
    yield
    assert torch.is_grad_enabled(), "a text call left autograd disabled"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: save(kind, str(root / kind)) for kind in CASES}


@pytest.mark.parametrize("kind", list(CASES))
def test_fullgrad_is_complete_on_every_task_and_vanilla_is_not(saved, kind):
    tm = lt.load(saved[kind])
    assert tm.task == kind
    text, kwargs = CASES[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error", lf.UnclassifiedOpWarning)  # every op classified, under both presets
        libragrad = lt.explain(tm, None, text, **kwargs)
        vanilla = lt.explain(tm, None, text, preset="vanilla", **kwargs)
    assert libragrad.tokens == tm.tokenizer.convert_ids_to_tokens(tm.tokenizer(text)["input_ids"])
    assert len(libragrad.scores) == len(libragrad.tokens)
    assert libragrad.completeness <= 1e-4, (kind, libragrad.completeness, libragrad.rest)
    assert vanilla.value == libragrad.value  # same forward
    assert vanilla.completeness > 100 * max(libragrad.completeness, 1e-7), (kind, vanilla.completeness)


def test_classifier_rest_names_the_biases_after_pooling(saved):
    a = lt.explain(lt.load(saved["classifier"]), None, "the movie was good", target=1)
    assert a.target == "positive"
    assert any("classifier.bias" in name for name in a.rest) and any("pooler.dense.bias" in name for name in a.rest)
    # position and token-type embeddings sit at token positions: in the scores, not in the rest
    assert not any("embeddings" in name for name in a.rest)
    total = sum(a.scores) + sum(a.rest.values())
    assert abs(total - a.value) <= 1e-4 * abs(a.value)


def test_a_plain_hf_model_and_tokenizer_explain_like_a_loaded_directory(saved):
    tm = lt.load(saved["classifier"])
    a = lt.explain(tm.model, tm.tokenizer, "the movie was good", target="positive", method="ixg")
    b = lt.explain(tm, None, "the movie was good", target="positive", method="ixg")
    assert a.scores == b.scores and a.value == b.value and a.task == "classifier"


def test_continuation_log_probability_and_its_entropy_term(saved):
    tm = lt.load(saved["causal-lm"])
    prepared = lt.prepare(tm, None, "the movie was", target="not good")
    scorer = lt.TokenScorer(prepared.readout, prepared.embeds)
    a = lt.attribute(prepared, scorer=scorer)
    ids = tm.tokenizer("the movie was")["input_ids"] + tm.tokenizer("not good", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = tm.model(input_ids=torch.tensor([ids]), use_cache=False).logits.double().log_softmax(-1)[0]
    expected = float(logp[len(ids) - 3, ids[-2]] + logp[len(ids) - 2, ids[-1]])
    assert math.isclose(a.value, expected, rel_tol=1e-5)
    assert a.tokens[-2:] == ["not", "good"] and a.completeness <= 1e-4
    assert a.rest["-entropy (log-softmax)"] < 0
    assert not scorer.report.unclassified and [h.op for h in scorer.report.head] == ["aten.log_softmax.int"]


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False)])
def test_sentence_encoder_honours_its_pooling_and_normalisation(tmp_path, pooling, normalize):
    tm = lt.load(save("sentence-encoder", str(tmp_path / "st"), pooling=pooling, normalize=normalize))
    assert (tm.pooling, tm.normalize) == (pooling, normalize)
    prepared = lt.prepare(tm, None, "the movie was good", pair="a great plot")
    scorer = lt.TokenScorer(prepared.readout, prepared.embeds)
    a = lt.attribute(prepared, scorer=scorer)
    with torch.no_grad():
        def embed(text):
            out = tm.model(**tm.tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            return out[0] if pooling == "cls" else out.mean(0)
        expected = float(F.cosine_similarity(embed("the movie was good"), embed("a great plot"), dim=0))
    assert math.isclose(a.value, expected, rel_tol=1e-5) and a.completeness <= 1e-4
    rules = {r.rule for r in scorer.report.rewritten if r.family == "normalization"}
    assert any("detached" in r for r in rules)  # the unit normalisation's norm is a statistic


def test_every_method_gives_one_score_per_token(saved):
    tm = lt.load(saved["classifier"])
    prepared = lt.prepare(tm, None, "the movie was not good", target="positive")
    scorer = lt.TokenScorer(prepared.readout, prepared.embeds)  # one transform serves every method
    for method in ("gradient", "ixg", "ig", "smoothgrad", "fullgrad", "rollout", "gae"):
        a = lt.attribute(prepared, method=method, scorer=scorer, ig_steps=4, sg_samples=2)
        assert len(a.scores) == 7 and all(math.isfinite(s) for s in a.scores), method
        assert (a.completeness is None) == (method in ("gradient", "smoothgrad", "rollout", "gae"))
        if method == "ig":
            assert "f(zero embeddings)" in a.rest


def test_padded_batch_is_complete_and_masks_are_constants(saved):
    """An integer attention mask is a constant to the transform: mean pooling's h * mask is linear in h,
    not a product of two streams (whose gradient the gating rule would halve)."""
    tm = lt.load(saved["sentence-encoder"])
    enc = tm.tokenizer(["the movie was good", "a plot"], padding=True, return_tensors="pt")
    embeds = tm.embed(enc["input_ids"])
    readout = lt.readouts.Similarity(tm.model, torch.randn(32), tm.pooling, tm.normalize)
    scorer = lt.TokenScorer(readout, embeds, enc["attention_mask"])
    assert not any(r.family == "gating" for r in scorer.report.rewritten)
    result = scorer.scores("fullgrad", embeds, enc["attention_mask"], torch.zeros(2, dtype=torch.long))
    assert float(result.completeness().max()) <= 1e-4
    assert float(result.scores[1, 4:].abs().max()) == 0.0  # padding gets nothing


def test_discrete_input_is_not_an_input_stream():
    class Pool(nn.Module):
        def forward(self, x, mask):
            return (x * mask[..., None].to(x.dtype)).sum(1)

    x, mask = torch.randn(2, 5, 3), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    gm = lf.transform(Pool(), (x, mask))
    assert not gm.libragrad_report.rewritten
    xs = x.clone().requires_grad_(True)
    gm(xs, mask)[:, 0].sum().backward()
    assert torch.equal(xs.grad[..., 0], mask.float())


def test_a_path_that_is_not_a_directory_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="not a local directory.*nothing is downloaded") as error:
        lt.load("bert-base-uncased")
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match="has no config.json"):
        lt.load(tmp_path)
