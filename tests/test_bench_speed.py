"""tools/bench_speed.py compares like with like: each contender with vanilla IxG in its own parameter setting."""
from __future__ import annotations

import tool_scripts
from libragrad_fx.bench.cost import Cost


def _tool():
    return tool_scripts.load("bench_speed")


def test_every_ratio_is_against_vanilla_in_the_same_parameter_setting():
    tool = _tool()
    C, T = tool.Contender, tool.Timing
    entries = [C("vanilla IxG", None, frozen=False), C("vanilla IxG, frozen", None),
               C("libragrad IxG", None, frozen=False), C("libragrad IxG, frozen", None)]
    seconds = {"vanilla IxG": 10.0, "vanilla IxG, frozen": 8.0, "libragrad IxG": 9.0, "libragrad IxG, frozen": 6.0}
    timings = {name: T(wall=[s, s], cpu=[s, s]) for name, s in seconds.items()}
    flops = {"vanilla IxG": 100, "vanilla IxG, frozen": 100, "libragrad IxG": 90, "libragrad IxG, frozen": 90}
    saved = {"vanilla IxG": 40, "vanilla IxG, frozen": 20, "libragrad IxG": 40, "libragrad IxG, frozen": 14}
    costs = {name: Cost(forward_flops=flops[name], saved_bytes=saved[name], forward_other_elements=1)
             for name in seconds}
    rows = {r["contender"]: r for r in tool._rows("m", entries, timings, costs)}
    assert rows["libragrad IxG"]["baseline"] == "vanilla IxG"
    assert rows["libragrad IxG"]["ratio_cpu"] == 0.9 and rows["libragrad IxG"]["parameters"] == "require grad"
    assert rows["libragrad IxG, frozen"]["baseline"] == "vanilla IxG, frozen"
    assert rows["libragrad IxG, frozen"]["ratio_cpu"] == 0.75  # not 6 / 10 = 0.6 against the other setting
    assert rows["libragrad IxG, frozen"]["flop_ratio"] == 0.9
    assert rows["libragrad IxG, frozen"]["saved_ratio"] == 0.7
    assert rows["vanilla IxG, frozen"]["freeze_ratio_cpu"] == 0.8  # what freezing alone changes, reported apart
