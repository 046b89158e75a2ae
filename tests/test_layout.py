"""The package's layout is its architecture: the compiler core stands without the product surface."""
from __future__ import annotations

import subprocess
import sys

PRODUCT_SURFACE = ("matplotlib", "rich", "PIL", "transformers", "libragrad_fx.bench", "libragrad_fx.cli")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_package_loads_no_plots_progress_bars_or_benchmark():
    loaded = _modules_after("import libragrad_fx")
    assert not {m for m in PRODUCT_SURFACE if m in loaded}, sorted(m for m in PRODUCT_SURFACE if m in loaded)


def test_passes_ship_inside_the_package_and_no_top_level_passes_module_exists():
    loaded = _modules_after("import libragrad_fx")
    assert "libragrad_fx.passes" in loaded and "passes" not in loaded
