"""The README's python code blocks run as they stand, each on its own: a fresh interpreter in an empty
folder, nothing defined by an earlier block. A block that reads a file the README writes with a
command (``torch.export.load("eva02.pt2")``) first runs that command; those are slow."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block."""
    with open(README) as f:
        text = f.read()
    return [(text[:m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"^```python\n(.*?)^```", text,
                                                                              re.S | re.M)]


def _needs(code: str) -> list[str]:
    """The README commands that write the files ``code`` loads."""
    with open(README) as f:
        text = f.read()
    commands = []
    for name in re.findall(r"""torch\.export\.load\(["']([^"']+\.pt2)["']\)""", code):
        match = re.search(rf"libragrad-fx (export [^`\n]*--out {re.escape(name)})", text)
        assert match, f"the README loads {name} but writes it with no `libragrad-fx export ... --out {name}`"
        commands.append(match.group(1))
    return commands


def _params():
    for line, code in _blocks():
        marks = [pytest.mark.slow] if _needs(code) else []
        yield pytest.param(code, id=f"line{line}", marks=marks)


def _run(argv: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_readme_has_python_examples():
    assert len(_blocks()) >= 2


@pytest.mark.parametrize("code", _params())
def test_a_readme_python_block_runs_on_its_own(code, tmp_path):
    for command in _needs(code):
        done = _run([sys.executable, "-m", "libragrad_fx", *shlex.split(command)], tmp_path)
        assert done.returncode == 0, done.stderr
    done = _run([sys.executable, "-c", code], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
