"""Generated sentences with ground-truth evidence tokens, for the text benchmark and its bundled classifier.

A sentence is 7 to 15 filler words with one *evidence phrase* inserted at a random place: a sentiment
keyword, optionally negated (``not`` / ``never`` directly before it, or with one intensifier between:
``not very good``). The label is the keyword's polarity, flipped under negation; nothing else in the
sentence bears on it. Distractors that must not count: intensifiers (``very good`` is just ``good``),
and decoy negators placed before a filler word (``not long``, ``never there``), so a model has to read
where the negator is, not only whether there is one.

The evidence of a sentence is the keyword and, when it is negated, the negator: the tokens a faithful
attribution should point at. Word ``i`` is token ``i + 1`` of the bundled tokenizer ([CLS] first).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["LABELS", "POSITIVE", "NEGATIVE", "NEGATORS", "INTENSIFIERS", "FILLER", "VOCAB", "SPECIAL", "Sentences",
           "generate", "HELDOUT_SEED", "TRAIN_SEED"]

LABELS = ("negative", "positive")
POSITIVE = ("good", "great", "excellent", "wonderful", "superb", "brilliant", "lovely", "pleasant")
NEGATIVE = ("bad", "awful", "terrible", "poor", "dreadful", "boring", "weak", "horrible")
NEGATORS = ("not", "never")
INTENSIFIERS = ("very", "really", "quite", "so")
FILLER = ("the a this that it movie film plot story acting music cast ending director scene song book show "
          "was is seemed felt looked and but with of in on at for after before during today yesterday city "
          "night morning long short old new red blue two many friends we they i saw watched heard there "
          "here again also just about around").split()
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB = SPECIAL + POSITIVE + NEGATIVE + NEGATORS + INTENSIFIERS + tuple(FILLER)

HELDOUT_SEED = 20250101
TRAIN_SEED = 1


@dataclass
class Sentences:
    """Generated sentences, their labels and evidence."""

    texts: list[str]
    labels: list[int]
    """0 negative, 1 positive."""
    evidence: list[list[int]]
    """Per sentence, the word positions of the evidence (keyword, and its negator when negated)."""
    negated: list[bool]

    def __len__(self) -> int:
        return len(self.texts)


def _sentence(rng: random.Random) -> tuple[list[str], int, list[int], bool]:
    words = [rng.choice(FILLER) for _ in range(rng.randint(7, 15))]
    polarity = rng.randrange(2)
    keyword = rng.choice(POSITIVE if polarity else NEGATIVE)
    negated = rng.random() < 0.35
    phrase: list[str] = []
    if negated:
        phrase.append(rng.choice(NEGATORS))
    if rng.random() < 0.3:
        phrase.append(rng.choice(INTENSIFIERS))
    phrase.append(keyword)
    at = rng.randint(0, len(words))
    words[at:at] = phrase
    evidence = [at + len(phrase) - 1] + ([at] if negated else [])
    if rng.random() < 0.5:  # a decoy negator before a filler word, away from the phrase
        spots = [i for i in range(len(words)) if i < at - 1 or i > at + len(phrase)]
        if spots:
            where = rng.choice(spots)
            words.insert(where, rng.choice(NEGATORS))
            evidence = [e + 1 if e >= where else e for e in evidence]
    return words, polarity ^ negated, sorted(evidence), negated


def generate(n: int, seed: int = HELDOUT_SEED) -> Sentences:
    """``n`` sentences from ``seed`` (the same seed gives the same sentences)."""
    rng = random.Random(seed)
    out = Sentences([], [], [], [])
    for _ in range(n):
        words, label, evidence, negated = _sentence(rng)
        out.texts.append(" ".join(words))
        out.labels.append(label)
        out.evidence.append(evidence)
        out.negated.append(negated)
    return out
