"""Errors in what the user passed (a model spec, a file, a shape): one line, naming the problem and the fix."""
from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """Bad input from the user. The message is one line: what is wrong, then what to do about it."""
