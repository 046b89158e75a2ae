"""Model specs: the ``MODEL`` that every command of the command line accepts.

* ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **model_kwargs)``; random weights unless
  ``checkpoint`` names a file (nothing is ever downloaded).
* ``package.module:factory`` or ``path/to/file.py:factory``: a callable returning an ``nn.Module``,
  called with ``model_kwargs``.
* a bundled model name (``libragrad_fx.bench.models.names()``), when that module is installed.
* ``FILE.pt2``: a program written by ``libragrad-fx export`` (already transformed).
* ``hf:PATH``: a saved Hugging Face model directory or sentence-transformers folder
  (:func:`libragrad_fx.text.load`; nothing is downloaded). The model is its task's readout over
  ``inputs_embeds`` (:func:`libragrad_fx.text.explain.inspection`) and its example input the embeddings
  of a short sample text.

Models are put in eval mode: the transform bakes the mode into the graph, and explanations are of
the deployed model. The input shape comes from timm's ``pretrained_cfg`` (with ``img_size`` /
``in_chans`` from ``model_kwargs`` taking precedence), a bundled model's card, or the ``.pt2``
file; anything else needs ``input_shape``.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from ..core.errors import UsageError, first_line

__all__ = ["LoadedModel", "load_model", "parse_shape", "example_input", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    model: nn.Module
    label: str
    """The spec as given, for reports."""
    kind: str
    """``timm``, ``factory``, ``bundled``, ``pt2`` or ``hf``."""
    input_shape: tuple[int, ...] | None
    """Full input shape, batch first, or None when it cannot be known."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    """Image normalisation the model expects (``explain --image``)."""
    exported: Any = None
    """For a ``.pt2`` file: its :class:`libragrad_fx.core.export.Exported` (program, recorded metadata)."""
    example: torch.Tensor | None = None
    """An example input to use instead of a random one (``hf:``: a sample text's embeddings)."""
    text_model: Any = None
    """For ``hf:PATH``: the loaded :class:`libragrad_fx.text.TextModel`."""
    notes: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    """Class names by output index, where known without a download (bundled models, ImageNet heads)."""

    def class_name(self, index: int) -> str:
        """``"3 (cross)"``, or ``"3"`` where the names are not known."""
        if self.classes is not None and 0 <= index < len(self.classes):
            return f"{index} ({self.classes[index]})"
        return str(index)

    @property
    def transformed(self) -> bool:
        """A program written by ``libragrad-fx export``: already transformed, the original model gone."""
        return self.exported is not None and self.exported.report is not None


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"bad input shape {text!r}: give positive integers separated by commas, e.g. 1,3,224,224")
    return shape


def load_model(spec: str, *, checkpoint: str | None = None, model_kwargs: dict | None = None,
               input_shape: tuple[int, ...] | None = None, seed: int = 0) -> LoadedModel:
    """Build the model ``spec`` names (see the module docstring), in eval mode."""
    kwargs = dict(model_kwargs or {})
    torch.manual_seed(seed)  # random init is reproducible
    if spec.endswith(".pt2"):
        if checkpoint or kwargs:
            raise UsageError(f"{spec} is an exported program: --checkpoint and --model-kwargs do not apply to it")
        loaded = _load_pt2(spec)
    elif spec.startswith("hf:"):
        if checkpoint or kwargs:
            raise UsageError(f"{spec} is a saved directory: --checkpoint and --model-kwargs do not apply to it")
        loaded = _load_hf(spec, spec[len("hf:"):])
    elif spec.startswith("timm:"):
        loaded = _load_timm(spec, spec[len("timm:"):], kwargs)
    elif ":" in spec:
        loaded = _load_factory(spec, kwargs)
    else:
        loaded = _load_bundled(spec, kwargs)
    if checkpoint:
        from .checkpoint import load_checkpoint

        load_checkpoint(loaded.model, checkpoint, spec)
    if loaded.kind != "pt2":  # an exported program has its mode baked in (and refuses .eval())
        loaded.model.eval()
    if input_shape is not None:
        loaded.input_shape = tuple(input_shape)
    return loaded


def example_input(loaded: LoadedModel, batch: int | None = None, seed: int = 0) -> torch.Tensor:
    """A reproducible random input of the model's shape (``batch`` overrides its first dimension); the
    model's own example where it has one."""
    if loaded.example is not None:
        return loaded.example if batch is None else loaded.example[:1].expand(batch, *loaded.example.shape[1:])
    if loaded.input_shape is None:
        raise UsageError(f"cannot tell the input shape of {loaded.label}: pass --input-shape, e.g. 1,3,224,224")
    shape = loaded.input_shape if batch is None else (batch, *loaded.input_shape[1:])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- the four kinds of spec ------------------------------------------------------------------

def _load_timm(spec: str, name: str, kwargs: dict) -> LoadedModel:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join('timm:' + c for c in close)}?" if close else \
            "list names with: python -c \"import timm; print(timm.list_models('*vit*'))\""
        raise UsageError(f"unknown timm model {name!r}: {hint}")
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as error:
        raise UsageError(f"timm:{name} does not accept --model-kwargs {kwargs} ({error}): "
                         "pass only arguments its constructor takes") from error
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    shape = _timm_input_shape(cfg, kwargs)
    return LoadedModel(model, spec, "timm", shape, tuple(cfg.get("mean", IMAGENET_MEAN)),
                       tuple(cfg.get("std", IMAGENET_STD)), classes=_imagenet_names(model))


def _imagenet_names(model: nn.Module) -> list[str] | None:
    """The ImageNet class names timm ships (no download) when the model's head has an ImageNet label set."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if not subset:
            return None
        info = ImageNetInfo(subset)
        names = [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]
    except Exception:  # an older timm, or a head it cannot place: indices only
        return None
    return names if len(names) == getattr(model, "num_classes", None) else None


def _timm_input_shape(cfg: dict, kwargs: dict) -> tuple[int, ...] | None:
    """(1, C, H, W) from timm's pretrained_cfg; ``img_size`` / ``in_chans`` kwargs change the model, not the cfg."""
    size = cfg.get("input_size")
    if size is None and "img_size" not in kwargs:
        return None
    channels, height, width = tuple(size) if size is not None else (3, None, None)
    channels = kwargs.get("in_chans", channels)
    if "img_size" in kwargs:
        img = kwargs["img_size"]
        height, width = (img, img) if isinstance(img, int) else tuple(img)
    return (1, channels, height, width)


def _load_factory(spec: str, kwargs: dict) -> LoadedModel:
    module_name, _, attr = spec.rpartition(":")
    factory = _resolve_factory(module_name, attr)
    try:
        model = factory(**kwargs)
    except Exception as error:
        raise UsageError(f"{spec}() raised {type(error).__name__}: {first_line(error)}; "
                         "check the factory and --model-kwargs") from error
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not an nn.Module: "
                         "point MODEL at a callable that builds the model")
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    shape = _timm_input_shape(cfg, kwargs) if cfg or "img_size" in kwargs else None
    return LoadedModel(model, spec, "factory", shape, tuple(cfg.get("mean", IMAGENET_MEAN)),
                       tuple(cfg.get("std", IMAGENET_STD)))


def _resolve_factory(module_name: str, attr: str) -> Callable[..., Any]:
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise UsageError(f"no such file {module_name!r}: give an existing .py file or package.module:factory")
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(module_name))[0], module_name)
        module = importlib.util.module_from_spec(spec)
        _import(lambda: spec.loader.exec_module(module), module_name)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: modules beside the user are importable
        module = _import(lambda: importlib.import_module(module_name), module_name)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"{module_name} has no attribute {attr!r}: name a function or class that builds the model")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"{module_name}:{attr} is not callable: name a function or class that builds the model")
    return target


def _import(load: Callable[[], Any], name: str) -> Any:
    try:
        return load()
    except ModuleNotFoundError as error:
        raise UsageError(f"cannot import {name!r} ({error}): run from the directory that holds it, "
                         "or install it") from error
    except Exception as error:
        raise UsageError(f"importing {name!r} raised {type(error).__name__}: {first_line(error)}") from error


def _bundled_models():
    try:
        from ..bench import models  # the small trained models shipped with the package
    except ImportError:
        return None
    return models


def _load_bundled(spec: str, kwargs: dict) -> LoadedModel:
    models = _bundled_models()
    available = list(models.names()) + list(models.names("clip")) if models is not None else []
    if spec not in available:
        import timm

        hint = f"did you mean timm:{spec}?" if timm.is_model(spec) else (
            "use timm:NAME, package.module:factory, FILE.pt2"
            + (f" or a bundled model ({', '.join(available)})" if available else ""))
        raise UsageError(f"unknown model {spec!r}: {hint}")
    if kwargs:
        raise UsageError(f"bundled model {spec!r} is fixed: --model-kwargs does not apply to it")
    model = models.load(spec)
    card = models.card(spec) if hasattr(models, "card") else {}
    if card.get("kind") == "clip":  # the image tower and its cosine similarity with each class prompt
        from ..bench.clip import class_readout

        model, card = class_readout(model), card["visual"]
    shape = _timm_input_shape({}, dict(card.get("kwargs", {})))
    # bundled models take images in [0, 1] as they come (their card says so): no normalisation
    from ..bench.data import CLASSES

    return LoadedModel(model, spec, "bundled", shape, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                       classes=list(CLASSES))


def _load_hf(spec: str, path: str) -> LoadedModel:
    try:
        from ..text.explain import inspection
        from ..text.loading import load
    except ImportError as error:
        raise UsageError(f"{spec} needs transformers ({error}): pip install 'libragrad-fx[hf]'") from error
    text_model = load(path)
    readout, example = inspection(text_model)
    return LoadedModel(readout, spec, "hf", tuple(example.shape), example=example, text_model=text_model)


def _load_pt2(path: str) -> LoadedModel:
    from ..core.export import load
    from .validate import pt2_archive

    pt2_archive(path)  # a plain message for a file that is no program, before torch.export tries it
    exported = load(path)
    return LoadedModel(exported.module, path, "pt2", exported.input_shape, exported.mean, exported.std,
                       exported=exported)


def probe(loaded: LoadedModel, x: torch.Tensor, hint: str) -> None:
    """One forward on ``x``, so that a wrong input shape is one line naming it (``hint``: the option that
    sets the shape) rather than a traceback from deep inside the model."""
    from ..core.errors import UsageError, first_line

    try:
        with torch.no_grad():
            loaded.model(x)
    except Exception as error:
        raise UsageError(f"{loaded.label} rejects an input of shape {tuple(x.shape)} ({type(error).__name__}: "
                         f"{first_line(error)}); {hint}") from error
