"""Make ``libragrad_fx.passes`` come from the same tree as ``libragrad_fx``.

Installed from a wheel, ``pyproject.toml``'s ``package-dir`` puts ``passes/`` at
``libragrad_fx/passes`` and the ordinary import finds it. Imported from a source checkout
(an editable install, or the checkout on ``sys.path``), ``passes/`` sits beside the package: load
that one, so that a checkout never mixes its core with another checkout's passes. It never
creates a top-level ``passes`` module.
"""
from __future__ import annotations

import importlib.util
import os
import sys


def ensure_passes(package: str, package_dir: str) -> None:
    name = f"{package}.passes"
    if name in sys.modules:
        return
    root = os.path.dirname(package_dir)
    source = os.path.join(root, "passes")
    if not (os.path.isfile(os.path.join(source, "__init__.py")) and os.path.isfile(os.path.join(root, "pyproject.toml"))):
        return  # an installed wheel: libragrad_fx/passes is a regular subpackage
    spec = importlib.util.spec_from_file_location(name, os.path.join(source, "__init__.py"),
                                                  submodule_search_locations=[source])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
