"""Load ``--checkpoint FILE`` into a model, saying plainly what is wrong with a file that does not fit.

Reads ``.safetensors`` and ``torch.save`` files (``weights_only``: tensors and containers, no code), a bare
state dict or one under ``state_dict_ema`` / ``model_ema`` / ``state_dict`` / ``model`` (timm's order),
with DDP / ``torch.compile`` prefixes removed.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn

from ..core.errors import UsageError, first_line

__all__ = ["load_checkpoint", "read_state_dict", "mismatch"]

_NESTED = ("state_dict_ema", "model_ema", "state_dict", "model")
_PREFIXES = ("_orig_mod.", "module.")
_SHOWN = 3  # keys named per kind of mismatch


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors in ``path`` by name; :class:`UsageError` naming the file and what is wrong with it."""
    if not os.path.isfile(path):
        raise UsageError(f"no such checkpoint {path!r}: pass an existing .pth or .safetensors file")
    if os.path.getsize(path) == 0:
        raise UsageError(f"checkpoint {path!r} is empty (0 bytes): was it written completely?")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:
            raise UsageError(f"checkpoint {path!r} is not a safetensors file ({first_line(error)})") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = first_line(error)
        if "Unsupported global" in str(error):  # a training checkpoint with its arguments, an optimizer...
            raise UsageError(f"checkpoint {path!r} holds Python objects besides tensors, which are not loaded (they "
                             "could run code); save the weights alone: torch.save(model.state_dict(), FILE)") from error
        raise UsageError(f"checkpoint {path!r} is not a PyTorch checkpoint: torch.load cannot read it "
                         f"({type(error).__name__}: {text})") from error
    state = loaded
    if isinstance(loaded, Mapping):
        key = next((k for k in _NESTED if isinstance(loaded.get(k), Mapping)), None)
        state = loaded[key] if key else loaded
    if not isinstance(state, Mapping) or not state:
        what = f"an empty {type(state).__name__}" if isinstance(state, (Mapping, list, tuple)) and not state \
            else f"a {type(state).__name__}"
        raise UsageError(f"checkpoint {path!r} holds {what}, not a state dict (parameter name -> tensor)")
    tensors = {_clean(str(k)): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UsageError(f"checkpoint {path!r} holds a dict without tensors ({_listed(list(map(str, state)))}), "
                         "not a state dict")
    return tensors


def _clean(key: str) -> str:
    while key.startswith(_PREFIXES):
        key = next(key[len(p):] for p in _PREFIXES if key.startswith(p))
    return key


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """None when ``state`` fits ``model`` exactly, else what does not: the missing and unexpected keys (a
    few of each, with counts) and tensors of the wrong shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's {len(expected)} keys missing ({_listed(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape ({_listed(shapes)})")
    return "; ".join(parts) or None


def load_checkpoint(model: nn.Module, path: str, label: str = "the model") -> None:
    """Load ``path`` into ``model`` strictly, or raise a one-line :class:`UsageError` saying what does not fit."""
    state = read_state_dict(path)
    wrong = mismatch(model, state)
    if wrong:
        raise UsageError(f"checkpoint {path!r} does not fit {label}: {wrong}; it must be a state dict of this "
                         "architecture (check --model-kwargs)")
    model.load_state_dict(state, strict=True)
