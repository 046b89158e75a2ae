"""The rows of a benchmark table: an attribution method under one backward (vanilla or LibraGrad), or a
baseline that has no backward to choose, and the ``--methods`` vocabulary that selects them."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..attr import ALIASES

__all__ = ["Method", "table", "names", "resolve"]


@dataclass(frozen=True)
class Method:
    """One row of the table: an attribution method under one backward."""

    key: str
    """Command-line name (``input_x_gradient``...)."""
    label: str
    """Short name in tables and figures."""
    variant: str
    """``vanilla``, ``libragrad`` or ``baseline``."""
    complete: bool = False
    """The map is meant to add up to what it explains (its completeness error is reported)."""

    @property
    def name(self) -> str:
        return self.label if self.variant == "baseline" else f"{self.variant}:{self.label}"


def table(gradient: Iterable[tuple[str, str, bool]], baselines: Iterable[tuple[str, str, bool]]) -> tuple[Method, ...]:
    """Every row, in table order: each gradient method ``(key, label, complete)`` once per backward, then the
    baselines."""
    return tuple(Method(key, label, variant, complete) for key, label, complete in gradient
                 for variant in ("vanilla", "libragrad")) + tuple(
        Method(key, label, "baseline", complete) for key, label, complete in baselines)


def names(methods: Iterable[Method]) -> list[str]:
    """The ``--methods`` vocabulary of a table: its method keys and the short aliases that name one of them."""
    keys = list(dict.fromkeys(m.key for m in methods))
    return keys + [alias for alias, key in ALIASES.items() if key in keys]


def resolve(methods: tuple[Method, ...], keys: list[str] | None) -> list[Method]:
    """The rows for the given keys or aliases (both variants of a gradient method); None or empty: all."""
    if not keys:
        return list(methods)
    wanted = {ALIASES.get(k, k) for k in keys}
    unknown = sorted(wanted - {m.key for m in methods})
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(names(methods))}")
    return [m for m in methods if m.key in wanted]
