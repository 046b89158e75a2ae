"""``index.csv``: one row per sample, merged by rank 0 from the shards' own rows once all exist.

Read shard by shard (each shard's rows sit in its header), written under a temporary name and
renamed, so the index is all or nothing and costs the memory of one shard's rows.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterator

from .shards import Layout, read_rows

__all__ = ["INDEX", "merge", "rows", "cell"]

INDEX = "index.csv"


def rows(out: Path, layout: Layout) -> Iterator[dict[str, Any]]:
    """Every shard's rows, in sample order."""
    for shard in range(layout.count):
        yield from read_rows(layout.path(out, shard))


def cell(value: Any) -> Any:
    """A CSV cell: floats written exactly (repr), missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def merge(out: Path, layout: Layout, columns: list[str], name: str = INDEX) -> Path:
    """Write ``out/name`` from the shards' rows (``columns`` in this order)."""
    path = out / name
    partial = out / f"{name}.partial"
    with open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows(out, layout):
            writer.writerow({k: cell(row.get(k)) for k in columns})
    os.replace(partial, path)
    return path
