"""What the wheel ships: every data file inside the package is declared, and the metadata is current."""
from __future__ import annotations

import fnmatch
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_every_data_file_in_the_package_ships():
    """A file setuptools is not told about (the bundled models' weights and cards) is left out of the wheel,
    and a data folder that is not a declared package draws a build warning."""
    setuptools = _config()["tool"]["setuptools"]
    packages, data = set(setuptools["packages"]), setuptools["package-data"]
    left_out = []
    package_root = os.path.join(ROOT, "libragrad_fx")
    for folder, dirs, files in os.walk(package_root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        package = "libragrad_fx" + folder[len(package_root):].replace(os.sep, ".")
        for name in files:
            if name.endswith(".py"):
                continue
            if package not in packages or not any(fnmatch.fnmatch(name, g) for g in data.get(package, [])):
                left_out.append(os.path.join(package, name))
    assert not left_out


def test_license_is_an_spdx_expression():
    config = _config()
    assert config["project"]["license"] == "MIT"  # a TOML table is deprecated (setuptools >= 77)
    assert any(r.startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in config["build-system"]["requires"])
