"""Errors: bad input from the user (one line naming the problem and the fix), and a transform that
cannot keep its promise."""
from __future__ import annotations

__all__ = ["UsageError", "ForwardMismatchError", "first_line"]


class UsageError(ValueError):
    """Bad input from the user. The message is one line: what is wrong, then what to do about it."""


class ForwardMismatchError(RuntimeError):
    """The transformed graph computes another forward than the model, beyond rounding."""


def first_line(error: object, limit: int = 240) -> str:
    """The first non-blank line of an error (or any text), cut at ``limit`` characters."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."
