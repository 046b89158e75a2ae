"""tools/bench_rules.py: each rule against the op it replaces, forward checked bit-identical first."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import tool_scripts


def _tool():
    return tool_scripts.load("bench_rules")


def test_one_row_per_case_with_a_ratio_to_vanilla(tmp_path):
    tool = _tool()
    tool.main(["--tiny", "--rounds", "2", "--skip-kernels", "--tag", "t", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "rules-t.json").read_text())["rows"]
    assert [(r["op"], r["where"]) for r in rows] == [(c.name, c.where) for c in tool.cases(tiny=True)]
    for r in rows:
        assert r["rounds"] == 2 and r["rule_ratio"] > 0 and r["rule_min_ratio"] > 0
        assert "rule_kernels_ratio" not in r
    table = (tmp_path / "rules-t.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in table) == len(rows) + 1  # the header and one line per case


def test_a_rule_whose_forward_differs_is_refused():
    tool = _tool()
    wrong = tool.Case("GELU", "a wrong rule", (2, 5), F.gelu, lambda x: F.gelu(x) * (1 + 2 ** -10))
    with pytest.raises(AssertionError, match=r"GELU \(a wrong rule\): the rule's forward differs"):
        tool.measure(wrong, rounds=1, kernels_on=False)


def test_parameter_gradients_are_asked_for_only_where_the_case_says():
    tool = _tool()
    x, w, b, g = torch.randn(2, 6), torch.randn(6), torch.randn(6), torch.randn(2, 6)
    ln = lambda x, w, b: F.layer_norm(x, (6,), w, b)  # noqa: E731
    assert len(tool._call(ln, x, (w, b), g, param_grads=False)) == 1
    assert len(tool._call(ln, x, (w, b), g, param_grads=True)) == 3
