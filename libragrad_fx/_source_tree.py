"""Make ``libragrad_fx.passes`` importable from a source checkout.

Installed (wheel or editable), ``pyproject.toml``'s ``package-dir`` maps ``passes/`` onto
``libragrad_fx.passes``. When the checkout root itself is on ``sys.path`` (``python -m ...`` run
from the root), Python finds the ``libragrad_fx/`` folder directly and the mapping is bypassed; this
loads ``../passes`` under its package name instead. It never creates a top-level ``passes`` module.
"""
from __future__ import annotations

import importlib.util
import os
import sys


def ensure_passes(package: str, package_dir: str) -> None:
    name = f"{package}.passes"
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    source = os.path.join(os.path.dirname(package_dir), "passes")
    spec = importlib.util.spec_from_file_location(name, os.path.join(source, "__init__.py"),
                                                  submodule_search_locations=[source])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot find {name}: reinstall with `pip install -e .`")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
