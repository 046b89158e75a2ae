"""Errors in what the user passed (a model spec, a file, a shape): one line, naming the problem and the fix."""
from __future__ import annotations

__all__ = ["UsageError", "first_line"]


class UsageError(ValueError):
    """Bad input from the user. The message is one line: what is wrong, then what to do about it."""


def first_line(error: object, limit: int = 240) -> str:
    """The first non-blank line of an error (or any text), cut at ``limit`` characters."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."
