"""The scripts under tools/ as modules for the tests (tools/ is not a package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load(script: str, module_name: str | None = None) -> ModuleType:
    """tools/<script>.py imported as ``module_name`` (default: the script's name), registered in
    sys.modules, where dataclasses look their module up."""
    name = module_name or script
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
