"""The timm sweep: architectures nobody wrote a rule for, each through tools/sweep.py.

CI runs the representative subset (``CI_SUBSET``: one family per general rule); every other family
is marked slow (``python -m pytest -m slow tests/test_sweep.py`` runs them all, as does
``python tools/sweep.py --all``, which also writes docs/sweep/).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import sweep  # noqa: E402

FAMILIES = [pytest.param(family, marks=() if family in sweep.CI_SUBSET else pytest.mark.slow, id=family)
            for family in sweep.FAMILIES]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_exact_complete_and_reported(family):
    row = sweep.run_family(family)
    assert row.status == "pass", f"{family} ({row.model}, {row.capture}): {row.status}: {row.reason}"
    assert row.forward_exact and row.fullgrad < sweep.TOLERANCE and row.local_incomplete == 0
    assert row.silent == 0 and row.unclassified == 0, row.unclassified_ops
    assert row.ixg_status == "pass" or row.ixg_status.startswith("n/a"), row.ixg_status


def test_resnet_needs_no_rewrite():
    """Piecewise-linear networks are complete as they are: the report must say nothing needed rewriting."""
    row = sweep.run_family("resnet")
    assert row.status == "pass" and row.rewrites == {} and row.ixg_vanilla < sweep.TOLERANCE


def test_every_named_family_is_in_the_sweep():
    assert {f for families in sweep.NAMED_FAMILIES.values() for f in families} <= set(sweep.FAMILIES)
