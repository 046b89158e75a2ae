"""Check what the user passed before any work starts: numbers in range, files that can be written, archives
that are what their name says.

The ``argparse`` types turn a bad number into argparse's one-line usage error (exit code 2); the other
checks raise :class:`~libragrad_fx.core.errors.UsageError`, which the command line prints in one line.
"""
from __future__ import annotations

import argparse
import os
import zipfile
from typing import Callable

from ..core.errors import UsageError

__all__ = ["positive_int", "nonnegative_int", "positive_float", "seed", "output_file", "pt2_archive"]

_SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes a 64-bit signed value


def _number(kind: type, test: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = wanted  # what argparse would name the type in its own messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "at least 1")
nonnegative_int = _number(int, lambda v: v >= 0, "0 or more")
positive_float = _number(float, lambda v: v > 0 and v != float("inf"), "a positive number")
seed = _number(int, lambda v: 0 <= v < _SEED_LIMIT, "between 0 and 2**63 - 1")


def output_file(path: str, option: str = "--out", suffix: str | None = None) -> str:
    """``path`` if a file can be written there (its folder exists and is writable, it is not a folder);
    else a :class:`UsageError` saying which and what to do. Nothing is created."""
    if suffix is not None and not path.endswith(suffix):
        raise UsageError(f"{option} {path!r} must end in {suffix}")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a folder: give a file name, e.g. {os.path.join(path, 'out' + (suffix or ''))}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path!r}: the folder {os.path.dirname(path) or folder!r} does not exist; "
                         "create it first or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path!r}: no permission to write there; choose a folder you can write to")
    return path


def pt2_archive(path: str) -> None:
    """A :class:`UsageError` unless ``path`` is a torch.export archive (what ``torch.export.save`` and
    ``libragrad-fx export`` write): a zip with a serialised program in it."""
    if not os.path.isfile(path):
        raise UsageError(f"no such file {path!r}: write one with `libragrad-fx export MODEL --out {path}`")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"cannot load {path!r}: it is not a zip archive, so not a torch.export program; "
                         "write one with `libragrad-fx export` or torch.export.save")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UsageError(f"cannot load {path!r}: a damaged zip archive ({error})") from error
    if any(name.endswith("/archive_format") or "/models/" in name for name in names):
        return
    if any(name.endswith("/data.pkl") for name in names):
        raise UsageError(f"cannot load {path!r}: it is a torch.save file (a state dict or a pickled object), not a "
                         "torch.export program; pass it to the model it belongs to with --checkpoint")
    raise UsageError(f"cannot load {path!r}: a zip archive without a torch.export program in it "
                     f"({len(names)} entries, none of them models/*.json); write one with `libragrad-fx export` "
                     "or torch.export.save")
