"""The rows of a benchmark table: an attribution method under one backward (vanilla or LibraGrad), or a
baseline that has no backward to choose, and the ``--methods`` vocabulary that selects them."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..attr import ALIASES

__all__ = ["Method", "table", "names", "resolve", "with_pixel_rule"]


@dataclass(frozen=True)
class Method:
    """One row of the table: an attribution method under one backward."""

    key: str
    """Command-line name (``input_x_gradient``...)."""
    label: str
    """Short name in tables and figures."""
    variant: str
    """``vanilla``, ``libragrad`` or ``baseline``; ``vanilla+dissent``, ``libragrad+dissent`` with a pixel rule."""
    complete: bool = False
    """The map is meant to add up to what it explains (its completeness error is reported)."""

    @property
    def name(self) -> str:
        return self.label if self.variant == "baseline" else f"{self.variant}:{self.label}"

    @property
    def preset(self) -> str:
        """The preset the method's backward runs under (``vanilla`` for a baseline)."""
        return "vanilla" if self.variant == "baseline" else self.variant.partition("+")[0]

    @property
    def pixel_rule(self) -> str | None:
        """The pixel readout on the input-facing layer (``transform(pixel_rule=...)``), or None."""
        return self.variant.partition("+")[2] or None


def table(gradient: Iterable[tuple[str, str, bool]], baselines: Iterable[tuple[str, str, bool]]) -> tuple[Method, ...]:
    """Every row, in table order: each gradient method ``(key, label, complete)`` once per backward, then the
    baselines."""
    return tuple(Method(key, label, variant, complete) for key, label, complete in gradient
                 for variant in ("vanilla", "libragrad")) + tuple(
        Method(key, label, "baseline", complete) for key, label, complete in baselines)


def with_pixel_rule(methods: Iterable[Method], rule: str | None) -> list[Method]:
    """Each gradient method's row followed by the same row with the pixel readout ``rule`` on the layer that
    reads the input (``libragrad`` -> ``libragrad+dissent``); baselines once. ``None``: the rows as they are."""
    out: list[Method] = []
    for m in methods:
        out.append(m)
        if rule is not None and m.variant != "baseline":
            out.append(Method(m.key, m.label, f"{m.variant}+{rule}", m.complete))
    return out


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
