"""``explain(model, tokenizer, text)``: one score per token, for what the model's task reads out.

The readout follows the task (:func:`libragrad_fx.text.loading.task_of`):

=================  ==================================================  =========================================
task               readout                                             ``target``
=================  ==================================================  =========================================
classifier         the class logit                                     None (predicted), an index or a label name
causal LM          the next token's logit after the text               None (predicted), a token id
                   the summed log-probability of a continuation        a string: the continuation
masked LM          the logit at the (first) mask token                 None (predicted), a token id or a token
sentence encoder   cos(embedding(text), embedding(pair))               (none; ``pair`` is required)
=================  ==================================================  =========================================

The attribution is taken at the input embeddings (the token lookup; position and token-type embeddings are
added inside the model and are biases to it). ``completeness`` is the relative error
``|sum(scores) + sum(rest) - value| / |value|`` of the methods meant to add up (fullgrad, input_x_gradient,
integrated_gradients), None for the others; ``rest`` names what the token scores leave out (see
:mod:`libragrad_fx.text.attribution`; for a continuation's log-probability FullGrad's rest also holds
minus the entropies of the predicted distributions, the part of log-softmax that is not linear in the
logits).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import UsageError
from . import readouts
from .attribution import COMPLETE, TokenScorer, resolve_method
from .loading import TextModel, task_of

__all__ = ["TokenAttribution", "Prepared", "SAMPLE", "explain", "prepare", "inspection"]

SAMPLE = "the quick brown fox jumps over the lazy dog"
"""The sample text whose embeddings are a loaded model's example input (``inspect``, ``check``...)."""


@dataclass
class TokenAttribution:
    """Token scores of one text and the numbers that go with them."""

    tokens: list[str]
    """The tokens as the tokenizer writes them (special tokens included)."""
    scores: list[float]
    target: str
    """What was explained: a label name, a token, ``continuation '...'`` or ``cos(text, pair)``."""
    value: float
    """The readout's value (the logit, log-probability or similarity explained)."""
    completeness: float | None
    """Relative error of scores + rest against value; None for methods that do not add up."""
    method: str
    preset: str
    rest: dict[str, float] = field(default_factory=dict)
    """What the token scores leave out, by name (bias shares with no token position, ...)."""
    task: str = ""
    text: str = ""
    pair: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """A text made ready for attribution: its readout, embeddings, tokens and target index."""

    readout: nn.Module
    embeds: torch.Tensor
    """[1, T, H]."""
    tokens: list[str]
    index: int
    """The readout entry explained (a class, a token id, or 0)."""
    target: str
    task: str
    entropy: float | None = None
    """For a continuation: sum of the predicted distributions' entropies."""


def _as_text_model(model: Any, tokenizer: Any) -> TextModel:
    if isinstance(model, TextModel):
        if tokenizer is not None:
            model.tokenizer = tokenizer
        return model
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"explain takes a Hugging Face model (or libragrad_fx.text.load(path)), got "
                        f"{type(model).__name__}")
    if tokenizer is None:
        raise ValueError("pass the model's tokenizer")
    task = task_of(model.config)
    labels = {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}
    return TextModel(model.eval(), tokenizer, task, labels=labels if task == "classifier" else {})


def _ids(tokenizer: Any, text: str, **kwargs: Any) -> list[int]:
    return list(tokenizer(text, **kwargs)["input_ids"])


def _vocab_index(tokenizer: Any, target: Any, what: str) -> int:
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    index = tokenizer.convert_tokens_to_ids(target)
    if index is None or index == tokenizer.unk_token_id:
        raise UsageError(f"{what} {target!r} is not a token of the vocabulary: pass a token or a token id")
    return int(index)


def prepare(model: Any, tokenizer: Any, text: str, *, pair: str | None = None, target: Any = None) -> Prepared:
    """The readout, embeddings and target of ``text`` for the model's task (see the module docstring)."""
    tm = _as_text_model(model, tokenizer)
    tok = tm.tokenizer
    task = tm.task
    entropy = None
    if task == "classifier":
        ids = _ids(tok, text, text_pair=pair) if pair is not None else _ids(tok, text)
        readout: nn.Module = readouts.ClassLogits(tm.model)
    elif task == "causal-lm":
        ids = _ids(tok, text)
        if isinstance(target, str) and not target.isdigit():
            continuation = _ids(tok, target, add_special_tokens=False)
            if not continuation:
                raise UsageError(f"the continuation {target!r} has no tokens")
            ids = ids + continuation
            readout = readouts.ContinuationLogProb(tm.model, continuation)
        else:
            readout = readouts.NextTokenLogits(tm.model)
    elif task == "masked-lm":
        ids = _ids(tok, text)
        if tok.mask_token_id is None or tok.mask_token_id not in ids:
            raise UsageError(f"the text has no mask token ({tok.mask_token!r}): write it where the masked LM "
                             "should predict")
        readout = readouts.MaskedLogits(tm.model, ids.index(tok.mask_token_id))
    else:
        if pair is None:
            raise UsageError(f"a {task} is explained through a similarity: pass the text to compare with "
                             "(pair=..., --pair)")
        ids = _ids(tok, text)
        embedding = readouts.Embedding(tm.model, tm.pooling, tm.normalize).eval()
        with torch.no_grad():
            other = embedding(tm.embed(torch.tensor([_ids(tok, pair)])))[0]
        readout = readouts.Similarity(tm.model, other, tm.pooling, tm.normalize)
    readout = readout.eval()
    input_ids = torch.tensor([ids])
    embeds = tm.embed(input_ids)
    tokens = list(tok.convert_ids_to_tokens(ids))
    with torch.no_grad():
        out = readout(embeds)
    if isinstance(readout, readouts.ContinuationLogProb):
        index, name = 0, f"continuation {target!r}"
        entropy = float(readout.entropy(embeds)[0])
    elif isinstance(readout, readouts.Similarity):
        index, name = 0, "cos(text, pair)"
    elif task == "classifier":
        index = _class_index(tm, target, out.shape[-1])
        name = tm.labels.get(index, str(index))
    else:
        index = int(out[0].argmax()) if target is None else _vocab_index(tok, target, "target")
        if not 0 <= index < out.shape[-1]:
            raise UsageError(f"target {index} is out of range: the vocabulary has {out.shape[-1]} entries")
        name = tok.convert_ids_to_tokens([index])[0]
    return Prepared(readout, embeds, tokens, index, name, task, entropy)


def _class_index(tm: TextModel, target: Any, classes: int) -> int:
    if target is None:
        return -1
    if isinstance(target, str) and not target.isdigit():
        by_name = {v: k for k, v in tm.labels.items()}
        if target not in by_name:
            raise UsageError(f"unknown label {target!r}; the classifier's labels: "
                             f"{', '.join(tm.labels[k] for k in sorted(tm.labels)) or '(none named)'}")
        return by_name[target]
    index = int(target)
    if not 0 <= index < classes:
        raise UsageError(f"target {index} is out of range: the classifier has {classes} classes (0..{classes - 1})")
    return index


def explain(model: Any, tokenizer: Any, text: str, *, pair: str | None = None, target: Any = None,
            method: str = "fullgrad", preset: str = "libragrad", ig_steps: int = 32, sg_samples: int = 16,
            seed: int = 0) -> TokenAttribution:
    """Attribute the model's readout on ``text`` to its tokens.

    Args:
        model: a Hugging Face model (its task from ``config.architectures``) or :func:`libragrad_fx.text.load`'s
            :class:`~libragrad_fx.text.loading.TextModel` (then ``tokenizer`` may be None).
        tokenizer: the model's tokenizer.
        text: the text (for a masked LM, with the mask token where the prediction is read).
        pair: a second text: the sentence to compare with (encoders), or a classifier's second segment.
        target: see the module docstring.
        method: ``gradient``, ``ixg``, ``ig``, ``smoothgrad``, ``fullgrad``, ``rollout`` or ``gae``.
        preset: ``libragrad`` or ``vanilla`` (or an ablation preset).
        ig_steps, sg_samples, seed: Integrated Gradients' steps, SmoothGrad's samples and noise seed.
    """
    prepared = prepare(model, tokenizer, text, pair=pair, target=target)
    return attribute(prepared, method=method, preset=preset, ig_steps=ig_steps, sg_samples=sg_samples, seed=seed,
                     text=text, pair=pair)


def attribute(prepared: Prepared, *, method: str = "fullgrad", preset: str = "libragrad",
              scorer: TokenScorer | None = None, **kwargs: Any) -> TokenAttribution:
    """:func:`explain` on a prepared text (``scorer``: reuse a transformed readout)."""
    text, pair = kwargs.pop("text", ""), kwargs.pop("pair", None)
    method = resolve_method(method)
    scorer = scorer or TokenScorer(prepared.readout, prepared.embeds, preset=preset)
    index = prepared.index
    if index < 0:  # the predicted class
        with torch.no_grad():
            index = int(scorer.gm(prepared.embeds)[0].argmax())
        prepared.index = index
        tm_labels = getattr(getattr(prepared.readout, "model", None), "config", None)
        labels = getattr(tm_labels, "id2label", None) or {}
        prepared.target = str(labels.get(index, index))
    result = scorer.scores(method, prepared.embeds, None, torch.tensor([index]), **kwargs)
    if method == "fullgrad" and prepared.entropy is not None:
        result.rest["-entropy (log-softmax)"] = torch.tensor([-prepared.entropy], dtype=torch.float64)
    complete = method in COMPLETE
    return TokenAttribution(
        tokens=prepared.tokens, scores=[float(s) for s in result.scores[0]], target=prepared.target,
        value=float(result.value[0]), completeness=float(result.completeness()[0]) if complete else None,
        method=method, preset=scorer.preset, rest={k: float(v[0]) for k, v in result.rest.items()} if complete else {},
        task=prepared.task, text=text, pair=pair)


def inspection(model: TextModel) -> tuple[nn.Module, torch.Tensor]:
    """The model's task readout over every output it can explain, and the embeddings of :data:`SAMPLE` [1, T, H]:
    class logits (classifier), next-token logits (causal LM), the logits at a mask token appended to the
    sample (masked LM), the pooled (normalised) embedding (encoders)."""
    tok = model.tokenizer
    text = SAMPLE + (f" {tok.mask_token}" if model.task == "masked-lm" and tok.mask_token else "")
    ids = _ids(tok, text)
    if model.task == "classifier":
        readout: nn.Module = readouts.ClassLogits(model.model)
    elif model.task == "causal-lm":
        readout = readouts.NextTokenLogits(model.model)
    elif model.task == "masked-lm":
        readout = readouts.MaskedLogits(model.model, ids.index(tok.mask_token_id) if tok.mask_token_id in ids else -1)
    else:
        readout = readouts.Embedding(model.model, model.pooling, model.normalize)
    return readout.eval(), model.embed(torch.tensor([ids]))
