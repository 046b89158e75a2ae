"""Optional fused CPU kernels for the rule backwards that the unfused torch expression makes slower
than the vanilla op's backward (GELU's gate, LayerNorm with the standard deviation detached).

Off by default: they are C++ compiled on this machine on first use (about 30 s, needs a C++
compiler and torch's headers; cached by torch.utils.cpp_extension afterwards). Turn them on with
:func:`enable` or the environment variable ``LIBRAGRAD_FX_KERNELS=1``. Without them every rule runs
as plain torch ops; with them the backward values agree to a few units in the last place (the GELU
gate is computed as ``(1 + erf(x / sqrt 2)) / 2``, as the GELU forward kernel computes it, instead
of ``erfc(-x / sqrt 2) / 2``).
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional

import torch

__all__ = ["enable", "disable", "switched_on", "active", "module", "ENV"]

ENV = "LIBRAGRAD_FX_KERNELS"
_SOURCE = Path(__file__).with_name("rule_backwards.cpp")

# the flags that make ATen's Vectorized<T> the implementation torch dispatches to on this CPU
_CAPABILITY_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl",
               "-mavx512dq", "-mfma"],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"],
}

_state: dict = {"module": None, "on": None}  # on: None until the environment variable has been read


def _build(verbose: bool = False) -> ModuleType:
    from torch.utils.cpp_extension import load

    capability = torch.backends.cpu.get_cpu_capability()
    flags = _CAPABILITY_FLAGS.get(capability, ["-DCPU_CAPABILITY=DEFAULT"])
    return load(name=f"libragrad_fx_rule_backwards_{capability.lower()}", sources=[str(_SOURCE)],
                extra_cflags=["-O3", *flags], verbose=verbose)


def enable(verbose: bool = False) -> ModuleType:
    """Build (or load the cached build of) the kernels and route the rules' backwards through them.
    Raises RuntimeError naming what failed when they cannot be built here."""
    if _state["module"] is None:
        try:
            _state["module"] = _build(verbose)
        except Exception as exc:  # a missing compiler or header: one line that says what to do
            raise RuntimeError(f"libragrad_fx fused kernels could not be built ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}); "
                               f"they need a C++ compiler and ninja; unset {ENV} to run without them") from exc
    _state["on"] = True
    return _state["module"]


def disable() -> None:
    """Run every rule as plain torch ops again (the built kernels stay loaded)."""
    _state["on"] = False


@contextmanager
def switched_on() -> Iterator[ModuleType]:
    """The kernels on inside the block (built if need be), and as they were before after it."""
    before = _state["on"]
    try:
        yield enable()
    finally:
        _state["on"] = before


def active() -> bool:
    """Whether the rule backwards use the fused kernels: after :func:`enable`, or with ``LIBRAGRAD_FX_KERNELS=1``
    (built on the first backward that needs them; a failed build warns once and falls back)."""
    if _state["on"] is None:
        _state["on"] = os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")
        if _state["on"]:
            try:
                enable()
            except RuntimeError as exc:
                warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
                _state["on"] = False
    return bool(_state["on"])


def module() -> Optional[ModuleType]:
    """The built kernels when active, else None."""
    return _state["module"] if active() else None
