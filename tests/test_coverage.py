"""The generated op coverage (tools/coverage.py): every op complete or reported, never silent.

CI runs every registry entry once (all its floating-point arguments input-dependent, its output
added to a stream) and checks that docs/coverage.md lists torch's core ATen opset as the registry
reads it; ``-m slow`` runs every combination of input-dependent arguments in every graph shape, and
regenerates docs/coverage.md exactly.
"""
from __future__ import annotations

import re

import pytest

import tool_scripts
from libragrad_fx.core import ops

coverage = tool_scripts.load("coverage", "op_coverage")  # not the `coverage` package

CASES = {case.name: case for case in coverage.registry_cases()}


def _resolves(name: str) -> bool:
    """A torch / Tensor / F / operator / builtin function, or an ATen packet, of that name."""
    import builtins
    import math
    import operator

    import torch
    import torch.fx._symbolic_trace as symbolic_trace
    import torch.nn.functional as F

    spaces = (torch, torch.Tensor, F, torch._C._nn, torch._C._special, torch._C._linalg, torch.special, torch.linalg,
              torch.fft, operator, builtins, math, symbolic_trace)
    return any(hasattr(space, name) for space in spaces) or isinstance(
        getattr(torch.ops.aten, name, None), torch._ops.OpOverloadPacket)


def test_every_spelling_in_the_registry_names_a_real_op():
    unknown = [(e.name, s) for e in ops.entries() for s in e.spellings
               if not s.startswith(ops.REWRITTEN_NAMESPACE + ".") and not _resolves(s)]
    assert not unknown, unknown
    nameless = [e.name for e in ops.entries() if not (_resolves(e.name) or e.spellings or e.modules
                                                     or e.name.startswith(ops.REWRITTEN_NAMESPACE + "."))]
    assert nameless == ["_guards_fn"], nameless  # torch.export's input checks, a call_module


def test_every_registry_entry_has_an_example_or_a_reason():
    missing = [e.name for e in ops.entries() if e.example is None and e.name not in coverage.WITHOUT_EXAMPLE
               and e.category.value not in coverage.WITHOUT_EXAMPLE]
    assert not missing, f"give these registry entries an example (or a reason in WITHOUT_EXAMPLE): {missing}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_registry_entry_is_complete_or_reported(name):
    case = CASES[name]
    outcomes = coverage.run_case(case, variants=("plus stream",), all_combos=False)
    if all(o.status == "n/a" for o in outcomes):  # a non-float output: the op alone
        outcomes = coverage.run_case(case, variants=("alone",), all_combos=False)
    failures = [f"{o.variant} {o.dep}: {o.detail}" for o in outcomes if o.status == "FAIL"]
    assert not failures, failures


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_registry_entry_in_every_graph(name):
    failures = [f"{o.variant} {o.dep}: {o.detail}" for o in coverage.run_case(CASES[name]) if o.status == "FAIL"]
    assert not failures, failures


def test_the_coverage_table_lists_the_core_opset_as_the_registry_reads_it():
    table = coverage.TABLE.read_text()
    rows = dict(re.findall(r"^\| `(aten\.[^`]+)` \| ([^|]+) \|", table, flags=re.M))
    expected = {f"aten.{op._opname}.{op._overloadname}" for op in coverage.core_ops()}
    assert set(rows) == expected, "docs/coverage.md is out of date: run python tools/coverage.py"
    for name, registry in rows.items():
        canonical, _ = ops.canonical(name.split(".")[1])
        entry = ops.lookup(canonical)
        known = f"`{canonical}` ({entry.category.value})" if entry is not None else "not in the registry"
        assert registry.strip() == known, f"{name}: table says {registry.strip()}, the registry {known}"
    assert "FAIL" not in table


@pytest.mark.slow
def test_the_coverage_table_is_what_the_code_gives():
    text, results = coverage.generate()
    failures = [o for outcomes in results.values() for o in outcomes if o.status == "FAIL"]
    assert not failures, failures[:5]
    assert text == coverage.TABLE.read_text(), "docs/coverage.md is out of date: run python tools/coverage.py"
