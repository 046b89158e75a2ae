"""HF transformers nobody wrote a rule for: a BERT encoder and a Llama decoder.

Tiny random configurations (no weights are downloaded), attributed over ``inputs_embeds``.
BERT: post-LN, GELU, softmax attention with an additive mask, tanh pooler. Llama: RMSNorm written
by hand (``x * rsqrt(mean(x^2) + eps)``), SwiGLU, RoPE on q and k, grouped-query causal attention.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import libragrad_fx as lf

transformers = pytest.importorskip("transformers")

HIDDEN = 32
# Additive constants of these models, by name: biases, and the position / token-type embeddings
# BERT adds to inputs_embeds.
ADDITIVE = ("bias", "position_embeddings", "token_type_embeddings")


class Logits(nn.Module):
    """``inputs_embeds -> logits`` (for a decoder, the logits of the last position)."""

    def __init__(self, model: nn.Module, last_position: bool = False) -> None:
        super().__init__()
        self.model = model
        self.last_position = last_position

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        if self.last_position:
            return self.model(inputs_embeds=inputs_embeds, use_cache=False).logits[:, -1]
        return self.model(inputs_embeds=inputs_embeds).logits


def bert() -> nn.Module:
    config = transformers.BertConfig(vocab_size=50, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=3,
                                     attn_implementation="eager")
    return Logits(transformers.BertForSequenceClassification(config))


def llama() -> nn.Module:
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=16,
                                      attn_implementation="eager")
    return Logits(transformers.LlamaForCausalLM(config), last_position=True)


MODELS = {"bert": (bert, {"attention", "normalization", "nonlinearity"}),
          "llama": (llama, {"attention", "normalization", "nonlinearity", "gating"})}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = MODELS[name][0]().eval()
    with torch.no_grad():  # HF zero-initialises biases: draw them, so that every one matters
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return model, torch.randn(2, 6, HIDDEN, generator=torch.Generator().manual_seed(1))


def ixg_error(model: nn.Module, embeds: torch.Tensor, target: int = 1) -> float:
    embeds = embeds.detach().clone().requires_grad_(True)
    out = model(embeds)
    (grad,) = torch.autograd.grad(out[:, target].sum(), embeds)
    total = (embeds.detach() * grad).flatten(1).sum(1)
    return float(((total - out[:, target].detach()).abs() / out[:, target].detach().abs()).max())


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_model_is_forward_exact_rewritten_and_complete(name):
    model, embeds = build(name)
    gm = lf.transform(model, embeds)
    report = gm.libragrad_report
    assert report.capture == "export"  # HF's forward has Python control flow on shapes: fx cannot trace it
    assert not report.unclassified, report.unclassified
    assert report.families() == MODELS[name][1]
    with torch.no_grad():
        assert torch.equal(gm(embeds), model(embeds))
        other = torch.randn(3, *embeds.shape[1:])  # another batch size
        assert torch.equal(gm(other), model(other))

    local = lf.node_completeness(gm, embeds)
    assert local.checks and not local.violations, str(local)
    fullgrad = float(lf.completeness(gm, embeds, 1, method="fullgrad").rel_error.max())
    assert fullgrad < 1e-4, f"{name}: FullGrad completeness {fullgrad:.2e}"

    with torch.no_grad():
        for param_name, p in model.named_parameters():
            if any(key in param_name for key in ADDITIVE):
                p.zero_()
    libragrad, vanilla = ixg_error(gm, embeds), ixg_error(model, embeds)
    assert libragrad < 1e-4, f"{name}: bias-free IxG completeness {libragrad:.2e} (vanilla {vanilla:.2e})"
    assert vanilla > 1e-2
