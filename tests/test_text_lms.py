"""Decoder-only language models at length: Llama, Qwen2, Mistral, Gemma and GPT-2 style configurations
(tiny random weights, KV cache off), FullGrad completeness of the next-token logit, float32 and bfloat16.

CI runs 32 tokens in float32; the 512-token runs in float32 and bfloat16 are ``slow``
(``tools/text_lm_lengths.py`` measures their transform times and errors into docs/text/lm_lengths.md).

bfloat16 tolerance. The rewritten backward makes FullGrad's terms add up to f exactly in exact arithmetic;
in bfloat16 every stored activation and gradient is rounded to 8 significant bits (eps = 2^-7), so each
term carries a relative error of a few eps and so does f itself. The error of the sum is therefore
bounded by a small multiple of eps times the scale of what is added, S = sum |token scores| +
sum |rest| + |f|, not by eps times |f| (the terms cancel: S is 2-4 |f| here). The test asks
|sum - f| <= 2 eps S; measured at 512 tokens (docs/text/lm_lengths.md): 0.33 eps S (Gemma), 0.23 (Llama),
0.18 (Qwen2), 0.08 (Mistral), 0.001 (GPT-2).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import libragrad_fx.text as lt  # noqa: E402
from text_models import LM_FAMILIES, LM_VOCAB, language_model  # noqa: E402

FAMILIES = {"llama": {"attention", "gating", "nonlinearity", "normalization"},
            "qwen2": {"attention", "gating", "nonlinearity", "normalization"},
            "mistral": {"attention", "gating", "nonlinearity", "normalization"},
            "gemma": {"attention", "gating", "nonlinearity", "normalization"},
            "gpt2": {"attention", "gating", "normalization"}}  # its tanh GELU is written out: x * (1 + tanh(..))/2


def fullgrad(family: str, length: int, dtype: torch.dtype) -> tuple[lt.Scores, lt.TokenScorer]:
    model = language_model(family).to(dtype)
    ids = torch.randint(0, LM_VOCAB, (1, length), generator=torch.Generator().manual_seed(0))
    embeds = model.get_input_embeddings()(ids).detach()
    scorer = lt.TokenScorer(lt.readouts.NextTokenLogits(model), embeds)  # checks the forward bit for bit
    return scorer.scores("fullgrad", embeds, None, torch.tensor([3])), scorer


def check(family: str, length: int, dtype: torch.dtype) -> None:
    result, scorer = fullgrad(family, length, dtype)
    report = scorer.report
    assert report.forward_check.startswith("bit-identical") and not report.unclassified
    assert report.families() == FAMILIES[family]
    assert result.scores.shape == (1, length)
    error = float((result.scores.sum() + sum(result.rest.values(), 0) - result.value).abs())
    if dtype == torch.float32:
        assert error <= 1e-4 * abs(float(result.value)), (family, error, float(result.value))
    else:
        scale = float(result.scores.abs().sum() + sum(v.abs() for v in result.rest.values()) + result.value.abs())
        assert error <= 2 * torch.finfo(dtype).eps * scale, (family, error, scale)


def test_families_cover_the_list():
    assert set(FAMILIES) == set(LM_FAMILIES)


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_language_model_fullgrad_is_complete_short(family):
    check(family, 32, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("family", LM_FAMILIES)
def test_language_model_fullgrad_is_complete_at_512_tokens(family, dtype):
    check(family, 512, dtype)
