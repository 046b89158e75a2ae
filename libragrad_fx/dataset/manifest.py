"""``manifest.json``: what an output folder holds and the command that made it.

Written once, when a run starts on an empty ``--out``; a later run into the same folder must agree
with it on everything that decides the output (the settings, the source's samples, the
preprocessing, the library versions) to continue it, else it is refused unless ``--overwrite``.
How a run is executed (processes, workers, threads, progress, shards per run) may differ.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from ..core.errors import UsageError

__all__ = ["MANIFEST", "build", "versions", "check", "write", "read"]

MANIFEST = "manifest.json"
FORMAT = "libragrad-fx dataset 1"
_COMPARED = ("format", "settings", "source", "preprocess", "versions")
_SOURCE_COMPARED = ("kind", "samples", "fingerprint")


def versions() -> dict[str, str]:
    """The versions that can change the numbers."""
    from importlib import metadata

    found = {}
    for name in ("libragrad-fx", "torch", "torchvision", "timm", "pillow", "safetensors"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def build(command: list[str], settings: dict[str, Any], source: dict[str, Any], preprocess: dict[str, Any],
          layout: dict[str, Any]) -> dict[str, Any]:
    manifest = {"format": FORMAT, "command": command, "settings": settings, "source": source,
                "preprocess": preprocess, "layout": layout, "versions": versions(), "python": platform.python_version()}
    return json.loads(json.dumps(manifest))  # as it reads back from the file (tuples become lists)


def _key(manifest: dict[str, Any]) -> dict[str, Any]:
    key = {k: manifest.get(k) for k in _COMPARED}
    key["source"] = {k: (manifest.get("source") or {}).get(k) for k in _SOURCE_COMPARED}
    return key


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} there, {b!r} here")
    return out


def read(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not JSON ({error.msg}): pass another --out, or --overwrite") from error


def check(out: Path, manifest: dict[str, Any]) -> bool:
    """Whether ``out`` already holds this run (True: continue it; False: it is new). A different run
    there raises a one-line :class:`UsageError`."""
    old = read(out)
    if old is None:
        return False
    differences = _differences(_key(old), _key(manifest))
    if differences:
        shown = "; ".join(differences[:3]) + (f" (and {len(differences) - 3} more)" if len(differences) > 3 else "")
        raise UsageError(f"--out {str(out)!r} holds the output of a different command ({shown}): pass another "
                         "--out, or --overwrite to replace it")
    return True


def write(out: Path, manifest: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, out / MANIFEST)
