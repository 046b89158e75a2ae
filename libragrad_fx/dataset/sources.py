"""What ``--data SOURCE`` names: a folder of images or an index file, read into one global sample order.

* A folder: every image file below it (recursive; any extension PIL reads; hidden files and folders
  skipped), in sorted path order. Images inside a top-level subfolder are labelled by it,
  ImageFolder-style: the top-level subfolders' names, sorted, are the classes 0, 1, ... (every
  subfolder counts, empty or not, as in torchvision's ``ImageFolder``).
* A CSV or JSONL index: one sample per row, its image in the column ``path`` (or ``image``,
  ``file``, ``filename``), relative to the index file's folder unless absolute; an optional
  ``label`` column (a class index); every other column kept, so ``--target COLUMN`` can read one.
  Rows keep the file's order.
* A JSONL of texts (a ``text`` field and no image path) is for text models, which the image path here
  does not explain: it is refused with a clear error.

The order fixes everything downstream (shard layout, sample ids), so a source is also summarised by
a fingerprint of its sample list: a resumed run checks it is reading the same samples.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UsageError

__all__ = ["Sample", "Source", "read_source", "image_extensions", "PATH_COLUMNS"]

PATH_COLUMNS = ("path", "image", "file", "filename")
"""Column names an index file may give its image paths under (the first present wins)."""


@dataclass(frozen=True)
class Sample:
    """One sample of the global order."""

    path: str
    """As the source gives it: relative to the folder, or as written in the index."""
    file: str
    """The file to open."""
    label: str = ""
    """The label as text: the class folder's name, or the index's ``label`` column ('' if none)."""
    label_index: int | None = None
    """The label as a class index, where it is one."""
    fields: dict[str, str] = field(default_factory=dict)
    """Every column of an index row (empty for a folder)."""


@dataclass
class Source:
    kind: str
    """``folder``, ``csv`` or ``jsonl``."""
    location: str
    samples: list[Sample]
    classes: list[str] | None = None
    """A folder's class names (the label indices' order); None without class subfolders."""
    columns: list[str] = field(default_factory=list)
    """An index file's columns."""

    def __len__(self) -> int:
        return len(self.samples)

    def fingerprint(self) -> str:
        """sha256 of the sample list (paths and labels, in order): the same source reads the same."""
        digest = hashlib.sha256()
        for s in self.samples:
            digest.update(f"{s.path}\t{s.label}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        return {"kind": self.kind, "location": os.path.abspath(self.location), "samples": len(self.samples),
                "classes": len(self.classes) if self.classes is not None else None,
                "fingerprint": self.fingerprint()}


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions PIL can open (``.png``, ``.jpg``, ``.webp``...)."""
    from PIL import Image

    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def read_source(location: str) -> Source:
    """The source at ``location``: a folder, a ``.csv`` or a ``.jsonl`` file (see the module docstring)."""
    path = Path(location)
    if path.is_dir():
        source = _folder(path)
    elif path.is_file() and path.suffix.lower() == ".csv":
        source = _csv(path)
    elif path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
        source = _jsonl(path)
    elif path.exists():
        raise UsageError(f"--data {location!r} is neither a folder nor a .csv / .jsonl index: give a folder of "
                         "images or an index file")
    else:
        raise UsageError(f"--data {location!r} does not exist: give a folder of images or a .csv / .jsonl index")
    if not source.samples:
        raise UsageError(f"--data {location!r} holds no samples: a folder needs image files "
                         f"({', '.join(sorted(image_extensions() & {'.png', '.jpg', '.jpeg', '.webp'}))}...), "
                         "an index file rows")
    return source


def _folder(root: Path) -> Source:
    extensions = image_extensions()
    found: list[str] = []
    for directory, folders, files in os.walk(root, followlinks=True):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.relpath(os.path.join(directory, name), root))
    found.sort(key=lambda p: Path(p).parts)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")) or None
    index = {name: i for i, name in enumerate(classes or ())}
    samples = []
    for rel in found:
        parts = Path(rel).parts
        label = parts[0] if len(parts) > 1 else ""
        samples.append(Sample(rel, str(root / rel), label, index.get(label)))
    return Source("folder", str(root), samples, classes)


def _rows_to_samples(rows: list[dict[str, str]], base: Path, location: str, line_of) -> tuple[list[Sample], list[str]]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    column = next((c for c in PATH_COLUMNS if c in columns), None)
    if column is None:
        if "text" in columns:
            raise UsageError(f"--data {location!r} holds texts (a 'text' field): explaining texts needs an hf: "
                             "model, which this version does not load; give images (a folder, or an index with "
                             "a 'path' column)")
        raise UsageError(f"--data {location!r} has no image path column: name one {', '.join(PATH_COLUMNS)} "
                         f"(its columns: {', '.join(columns) or 'none'})")
    samples = []
    for i, row in enumerate(rows):
        value = row.get(column) or ""
        if not value:
            raise UsageError(f"--data {location!r}, {line_of(i)}: empty {column!r}: every row needs an image path")
        label = row.get("label") or ""
        samples.append(Sample(value, str(base / value), label, _as_index(label), dict(row)))
    return samples, columns


def _as_index(text: str) -> int | None:
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _csv(path: Path) -> Source:
    with open(path, newline="") as f:
        rows = [{k: (v if v is not None else "") for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
    samples, columns = _rows_to_samples(rows, path.parent, str(path), lambda i: f"row {i + 2}")
    return Source("csv", str(path), samples, None, columns)


def _jsonl(path: Path) -> Source:
    rows, lines = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise UsageError(f"--data {str(path)!r}, line {number}: not JSON ({error.msg}): write one JSON "
                                 "object per line") from error
            if not isinstance(value, dict):
                raise UsageError(f"--data {str(path)!r}, line {number}: a JSON object per line is needed, got "
                                 f"{type(value).__name__}")
            rows.append({k: "" if v is None else str(v) for k, v in value.items()})
            lines.append(number)
    samples, columns = _rows_to_samples(rows, path.parent, str(path), lambda i: f"line {lines[i]}")
    return Source("jsonl", str(path), samples, None, columns)
