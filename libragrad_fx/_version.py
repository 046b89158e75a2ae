"""The package's version, from one place: ``pyproject.toml``.

In a source checkout (``pyproject.toml`` beside the package) it is read from that file, so a checkout
never reports another install's version; installed from a wheel, from the installed metadata, which
the build copied from the same file.
"""
from __future__ import annotations

import os


def version(package_dir: str) -> str:
    root = os.path.dirname(package_dir)
    pyproject = os.path.join(root, "pyproject.toml")
    if os.path.isfile(pyproject) and os.path.isdir(os.path.join(root, "passes")):
        import tomllib

        with open(pyproject, "rb") as f:
            return tomllib.load(f)["project"]["version"]
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("libragrad-fx")
    except PackageNotFoundError:  # the package copied somewhere without its metadata
        return "unknown"
