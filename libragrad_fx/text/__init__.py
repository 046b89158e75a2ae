"""Text and language models: saved Hugging Face directories, token attributions, their rendering and a
benchmark with ground-truth evidence tokens.

    import libragrad_fx.text as lt
    tm = lt.load("path/to/saved_model")          # a save_pretrained folder or a sentence-transformers folder
    a = lt.explain(tm, None, "the movie was not bad")    # -> TokenAttribution(tokens, scores, target, ...)

Needs ``transformers`` (imported when a model is loaded); ``import libragrad_fx`` does not import this package.
"""
from .attribution import METHODS, Scores, TokenScorer
from .explain import Prepared, TokenAttribution, attribute, explain, prepare
from .loading import TASKS, TextModel, load, task_of

__all__ = ["load", "explain", "prepare", "attribute", "TokenAttribution", "Prepared", "TextModel", "TokenScorer",
           "Scores", "METHODS", "TASKS", "task_of"]
