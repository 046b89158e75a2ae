"""Tiny saved Hugging Face model directories for the text tests: random weights, a word-level tokenizer
saved beside each (nothing downloaded)."""
from __future__ import annotations

import json
import os

import torch

WORDS = ("the movie was not good bad a plot and great film acting really very never boring "
         "story music long short fine").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN = 32


def tokenizer():
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _bert(**kwargs):
    import transformers

    return transformers.BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=HIDDEN, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, **kwargs)


def _nonzero_biases(model):
    """HF zero-initialises biases: draw them, so that every one matters to completeness."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return model


def build(kind: str):
    """A tiny random model of ``kind``: classifier, causal-lm, masked-lm, encoder."""
    import transformers

    torch.manual_seed(0)
    if kind == "classifier":
        model = transformers.BertForSequenceClassification(_bert(num_labels=2, id2label={0: "negative", 1: "positive"},
                                                                 label2id={"negative": 0, "positive": 1}))
    elif kind == "masked-lm":
        model = transformers.BertForMaskedLM(_bert())
    elif kind == "encoder":
        model = transformers.BertModel(_bert(), add_pooling_layer=False)
    elif kind == "causal-lm":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=len(SPECIAL) + len(WORDS), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64))
    else:
        raise ValueError(kind)
    return _nonzero_biases(model).eval()


def save(kind: str, path: str, pooling: str = "mean", normalize: bool = True) -> str:
    """Save a tiny model and its tokenizer under ``path``; ``sentence-encoder``: a sentence-transformers
    folder (Transformer at the root, then Pooling and, if ``normalize``, Normalize)."""
    os.makedirs(path, exist_ok=True)
    build("encoder" if kind == "sentence-encoder" else kind).save_pretrained(path)
    tokenizer().save_pretrained(path)
    if kind == "sentence-encoder":
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            os.makedirs(os.path.join(path, "2_Normalize"), exist_ok=True)
        os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
        modes = {f"pooling_mode_{m}": m == pooling for m in ("cls_token", "mean_tokens", "max_tokens", "lasttoken")}
        modes = {k: k == {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                          "max": "pooling_mode_max_tokens", "lasttoken": "pooling_mode_lasttoken"}[pooling]
                 for k in modes}
        with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
            json.dump({"word_embedding_dimension": HIDDEN, "pooling_mode_mean_sqrt_len_tokens": False, **modes}, f)
        with open(os.path.join(path, "modules.json"), "w") as f:
            json.dump(modules, f)
    return path


# Decoder-only language models at length: tiny random configurations of five families (KV cache off).
LM_VOCAB = 128


def language_model(family: str, positions: int = 1024):
    """A tiny random causal LM of ``family``: llama, qwen2, mistral, gemma, gpt2."""
    import transformers

    torch.manual_seed(0)
    common = dict(vocab_size=LM_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, max_position_embeddings=positions, use_cache=False)
    if family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    elif family == "qwen2":  # q/k/v biases
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    elif family == "mistral":  # sliding-window attention (16 tokens): the mask differs from causal at any length
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common, sliding_window=16))
    elif family == "gemma":  # GeGLU (tanh GELU), RMSNorm with (1 + w), embeddings scaled by sqrt(hidden)
        model = transformers.GemmaForCausalLM(transformers.GemmaConfig(**common, head_dim=16))
    elif family == "gpt2":  # Conv1D (addmm), learned positions, hand-written tanh GELU, post-attention LayerNorm
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=LM_VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=positions, use_cache=False,
            bos_token_id=0, eos_token_id=0))
    else:
        raise ValueError(family)
    return _nonzero_biases(model).eval()


LM_FAMILIES = ("llama", "qwen2", "mistral", "gemma", "gpt2")
