"""Output folders of the commands that write several files: a fresh run folder by default, never a silent
overwrite of earlier results."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..core.errors import UsageError

__all__ = ["prepare", "fresh_run_folder", "remove_if_empty"]


def fresh_run_folder(root: str | os.PathLike, now: float | None = None) -> Path:
    """``root/<YYYYmmdd-HHMMSS>`` (local time), with ``-2``, ``-3``... where that name is taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate, n = Path(root) / stamp, 1
    while candidate.exists():
        n += 1
        candidate = Path(root) / f"{stamp}-{n}"
    return candidate


def prepare(out: str | os.PathLike | None, default_root: str | os.PathLike, *, overwrite: bool = False,
            option: str = "--out") -> Path:
    """The folder to write into, created and known to be writable before any work starts.

    ``out`` None: a fresh run folder under ``default_root`` (:func:`fresh_run_folder`). An existing
    folder must be empty unless ``overwrite`` (its files of the same names are then replaced, others
    left as they are). Raises :class:`UsageError` (one line: what is wrong, what to do)."""
    folder = fresh_run_folder(default_root) if out is None else Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {str(folder)!r} is a file, not a folder: name a folder to write into")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UsageError(f"{option} {str(folder)!r} is not empty: pass --overwrite to replace its results, "
                         "or name a new folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{option} {str(folder)!r}: cannot create the folder ({error.strerror or error}); "
                         "choose a place you can write to") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {str(folder)!r}: no permission to write there; choose a folder you can write to")
    return folder


def remove_if_empty(folder: Path) -> None:
    """Take back a folder :func:`prepare` made when the run wrote nothing into it (it failed or was stopped)."""
    try:
        folder.rmdir()  # only succeeds on an empty folder
    except OSError:
        pass
