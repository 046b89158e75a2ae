"""The shard layout: fixed ranges of the global sample order, one safetensors file each.

Shard ``k`` holds samples ``[k * size, (k + 1) * size)`` whoever computes it, so the files do not
depend on how many processes wrote them. A shard holds its tensors (one row per sample, in order)
and, in the file's metadata, its index rows and a few facts as one JSON string (one key: safetensors
stores metadata as a hash map, whose order would change the bytes). It is written under a temporary name and
renamed when complete: a file with the final name is a finished shard, and a run killed mid-write
leaves only a temporary file, which the next run deletes.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["Layout", "SHARDS", "write_shard", "read_rows", "read_header", "read_tensors", "finished", "remove_partial"]

SHARDS = "shards"
"""The sub-folder of ``--out`` that holds the shard files."""
_KEY = "libragrad_fx"
_NAME = re.compile(r"^(\d{6})\.safetensors$")
_PARTIAL = ".partial"


@dataclass(frozen=True)
class Layout:
    """``samples`` split into shards of ``size``."""

    samples: int
    size: int

    @property
    def count(self) -> int:
        return math.ceil(self.samples / self.size)

    def range(self, shard: int) -> range:
        return range(shard * self.size, min((shard + 1) * self.size, self.samples))

    def path(self, out: Path, shard: int) -> Path:
        return out / SHARDS / f"{shard:06d}.safetensors"


def finished(out: Path) -> set[int]:
    """The shards already complete in ``out``."""
    folder = out / SHARDS
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for m in (_NAME.match(p.name) for p in folder.iterdir()) if m}


def remove_partial(out: Path) -> int:
    """Delete what killed runs left half-written; how many files."""
    folder = out / SHARDS
    stale = [p for p in folder.iterdir() if _PARTIAL in p.name] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def write_shard(path: Path, tensors: dict[str, Tensor], rows: list[dict[str, Any]], info: dict[str, str]) -> None:
    """Write one shard atomically: a temporary file, renamed to ``path`` once complete."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}{_PARTIAL}.{os.getpid()}")
    metadata = {_KEY: json.dumps({"info": info, "rows": rows}, separators=(",", ":"))}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial), metadata=metadata)
    os.replace(partial, path)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A shard's index rows (read from its header only)."""
    return read_header(path)["rows"]


def read_header(path: Path) -> dict[str, Any]:
    """A shard's ``{"info": {...}, "rows": [...]}`` (read from its header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[_KEY])


def read_tensors(path: Path, names: list[str] | None = None) -> dict[str, Tensor]:
    """A shard's tensors (all, or ``names``)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in (names if names is not None else f.keys())}

