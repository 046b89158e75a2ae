"""``libragrad-fx demo --text``: one held-out sentence, its evidence, and token scores vanilla beside LibraGrad.

The sentence is the first of the held-out set whose sentiment keyword is negated and that also holds a decoy
negator (one that negates nothing), so the evidence is two tokens among distractors that look like it. The
bundled classifier explains its label with Input x Gradient and FullGrad on the vanilla and on the LibraGrad
backward; each line gives the readout (the label's logit), the completeness error, and where the scores put
the evidence: its average precision among the words (1 = the evidence ranks first).
"""
from __future__ import annotations

import time

import torch

__all__ = ["pick", "run"]

METHODS = ("input_x_gradient", "fullgrad")


def pick(seed: int | None = None) -> tuple[str, int, list[int]]:
    """(text, label, evidence word positions) of the demo sentence."""
    from .data import HELDOUT_SEED, NEGATORS, generate

    sentences = generate(200, seed=HELDOUT_SEED if seed is None else seed)
    for text, label, evidence, negated in zip(sentences.texts, sentences.labels, sentences.evidence,
                                              sentences.negated):
        words = text.split()
        if negated and sum(w in NEGATORS for w in words) == 2 and len(words) <= 14:
            return text, label, evidence
    return sentences.texts[0], sentences.labels[0], sentences.evidence[0]


def run(seed: int | None = None, console=None) -> str:
    """Print the demo to the terminal (rich); returns its last line."""
    from rich.console import Console

    from .. import metrics
    from . import model as bundled
    from .attribution import TokenScorer
    from .data import LABELS
    from .explain import attribute, prepare
    from .render import terminal

    start = time.perf_counter()
    console = console or Console(highlight=False, soft_wrap=True)
    tm = bundled.load()
    text, label, evidence = pick(seed)
    prepared = prepare(tm, None, text, target=label)
    words = text.split()
    console.print(f"sentence: \"{text}\"  (label {LABELS[label]})")
    console.print("evidence: " + ", ".join(f"'{words[i]}' (word {i + 1})" for i in evidence)
                  + "; the other negator negates nothing")
    marks = torch.zeros(len(prepared.tokens), dtype=torch.bool)
    marks[torch.tensor(evidence) + 1] = True
    words_only = torch.ones_like(marks)
    words_only[0] = words_only[-1] = False  # [CLS], [SEP]
    for preset in ("vanilla", "libragrad"):
        scorer = TokenScorer(prepared.readout, prepared.embeds, preset=preset)
        for method in METHODS:
            a = attribute(prepared, method=method, preset=preset, scorer=scorer, text=text)
            scores = torch.tensor(a.scores).masked_fill(~words_only, float("-inf"))
            ap = float(metrics.average_precision(scores[None], marks[None])[0])
            terminal([a], console)
            console.print(f"           evidence AP {ap:.2f}")
    last = (f"bundled classifier ({bundled.card()['heldout']['accuracy']:.1%} held-out accuracy); "
            f"{time.perf_counter() - start:.1f} s")
    console.print(last)
    return last
