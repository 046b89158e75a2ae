"""What a first-time user meets around the commands: --version, help for every option, progress on a
terminal (and nowhere else), one node count everywhere, and bench results that land in a fresh folder."""
from __future__ import annotations

import io
import json
import os
import re
import tomllib

import pytest
from archs import SMALL

import libragrad_fx as lf
from libragrad_fx.cli import main
from libragrad_fx.cli.main import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT = ["timm:vit_small_patch16_224", "--model-kwargs", json.dumps({**SMALL, "num_classes": 5})]
MLP = ["cli_models:tiny_mlp", "--input-shape", "2,3,4,4"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_is_the_pyproject_version(capsys):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert lf.__version__ == version
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"libragrad-fx {version}"


def _subparsers(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    missing = [f"libragrad-fx {a.option_strings}" for a in parser._actions if not a.help]
    for name, sub in _subparsers(parser).items():
        missing += [f"{name} {a.option_strings or a.dest}" for a in sub._actions if not a.help]
    assert not missing


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_on(stream, monkeypatch, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.stderr", stream)
    code = main(list(argv))
    return code, stream.getvalue()


def test_progress_shows_on_a_terminal_only(monkeypatch, capsys):
    code, shown = _run_on(_Terminal(), monkeypatch, "inspect", *MLP, "--format", "json")
    assert code == 0
    assert "transforming (preset libragrad)" in shown and "loading cli_models:tiny_mlp" in shown
    json.loads(capsys.readouterr().out)  # stdout holds the result alone
    code, shown = _run_on(_Terminal(), monkeypatch, "inspect", *MLP, "--format", "json", "--no-progress")
    assert code == 0 and shown == ""
    code, shown = _run_on(_Terminal(), monkeypatch, "--no-progress", "inspect", *MLP, "--format", "json")
    assert code == 0 and shown == ""
    code, shown = _run_on(io.StringIO(), monkeypatch, "inspect", *MLP, "--format", "json")  # a log, a pipe
    assert code == 0 and shown == ""


def test_check_shows_each_step_and_counts_the_ops(monkeypatch, capsys):
    code, shown = _run_on(_Terminal(), monkeypatch, "check", *MLP)
    assert code == 0
    for step in ("checking the forward", "checking FullGrad completeness", "checking local completeness, op by op",
                 "timing fwd+bwd (3 runs each after a warm-up)"):
        assert step in shown
    assert re.search(r"\d+/\d+", shown)  # the per-op bar counts
    out = capsys.readouterr().out
    assert "timings (fwd+bwd: median of 3 runs after a warm-up)" in out


def test_node_completeness_reports_progress_per_op():
    import torch
    from cli_models import tiny_mlp

    calls = []
    result = lf.node_completeness(tiny_mlp().eval(), torch.randn(2, 3, 4, 4),
                                  progress=lambda done, total: calls.append((done, total)))
    total = len(result.checks)
    assert total > 0 and calls[0] == (0, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == list(range(total + 1))


def _count(pattern: str, text: str) -> tuple[int, ...]:
    match = re.search(pattern, text)
    assert match, text
    return tuple(int(g) for g in match.groups())


def test_one_node_count_across_inspect_diff_and_export(capsys, tmp_path):
    """inspect, diff and export count the same things in the same words."""
    counts = r"(\d+) nodes rewritten by the rules, (\d+) with a pruned backward \((\d+) of them not rewritten by a rule\)"
    code, inspected, _ = cli(capsys, "inspect", *VIT)
    assert code == 0
    code, diffed, _ = cli(capsys, "diff", *VIT)
    assert code == 0
    code, exported, _ = cli(capsys, "export", *VIT, "--out", str(tmp_path / "vit.pt2"))
    assert code == 0
    rewritten, pruned, only_pruned = _count(counts, inspected)
    assert _count(counts, diffed) == _count(counts, exported) == (rewritten, pruned, only_pruned)
    (changed,) = _count(r"; (\d+) nodes changed", diffed)
    assert changed == rewritten + only_pruned  # diff lists every node the transform touched
    data = json.loads(main(["inspect", *VIT, "--format", "json"]) == 0 and capsys.readouterr().out)
    assert rewritten == len({r["node"] for r in data["rewritten"]}) and pruned == len({r["node"] for r in
                                                                                       data["backward"]})


def _bench(*extra: str) -> list[str]:
    return ["bench", "--n", "1", "--models", "vit", "--methods", "ixg", "--batch", "2", "--no-progress",
            "--lxt-python", "/nonexistent", *extra]


def test_bench_writes_a_fresh_run_folder_and_never_overwrites(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *_bench())
    assert code == 0, err
    (run,) = (tmp_path / "libragrad-bench").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", run.name)
    assert {p.name for p in run.iterdir()} >= {"results.csv", "results.md", "run.json", "examples_vit.png"}
    assert f"into libragrad-bench/{run.name}/" in out
    assert "| IxG | libragrad |" in out  # the results table itself, on screen
    assert not (tmp_path / "docs").exists()
    before = (run / "results.csv").stat().st_mtime_ns
    code, _, err = cli(capsys, *_bench("--out", str(run)))
    assert code == 2 and "is not empty: pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert (run / "results.csv").stat().st_mtime_ns == before
    code, _, err = cli(capsys, *_bench("--out", str(tmp_path / "new" / "run")))
    assert code == 0 and (tmp_path / "new" / "run" / "results.csv").is_file(), err  # a new folder is made


def test_output_folders(tmp_path):
    from libragrad_fx.cli.outdir import fresh_run_folder, prepare, remove_if_empty
    from libragrad_fx.core.errors import UsageError

    first = prepare(None, tmp_path / "runs")
    assert first.is_dir() and first.parent == tmp_path / "runs"
    (first / "results.csv").write_text("old")
    assert fresh_run_folder(tmp_path / "runs") != first  # a second run in the same second gets its own
    with pytest.raises(UsageError, match="is not empty"):
        prepare(first, tmp_path)
    assert prepare(first, tmp_path, overwrite=True) == first and (first / "results.csv").read_text() == "old"
    with pytest.raises(UsageError, match="is a file, not a folder"):
        prepare(first / "results.csv", tmp_path)
    empty = prepare(tmp_path / "new", tmp_path)
    remove_if_empty(empty)
    remove_if_empty(first)
    assert not empty.exists() and first.exists()


def test_explain_names_the_target_and_says_why_ixg_does_not_add_up(capsys, tmp_path):
    from libragrad_fx.bench.data import CLASSES

    code, out, err = cli(capsys, "explain", "vit", "--random", "--compare", "--out", str(tmp_path / "ixg.png"))
    assert code == 0, err
    target = int(re.search(r"libragrad  ixg: target (\d+) \(", out).group(1))
    assert f"target {target} ({CLASSES[target]})" in out
    assert "leaves the biases' share of the score out" in out  # the bundled ViT's stem bias is large
    code, out, err = cli(capsys, "explain", "vit", "--random", "--method", "fullgrad", "--json",
                         "--out", str(tmp_path / "fullgrad.png"))
    (numbers,) = json.loads(out)["explanations"]
    assert code == 0 and numbers["target_name"] == CLASSES[numbers["target"]]


def _spans(line: str) -> list[tuple[int, int]]:
    """Where each cell of a table line starts and ends (cells are separated by two spaces or more)."""
    return [m.span() for m in re.finditer(r"\S+(?: \S+)*", line)]


def test_the_demo_table_puts_every_column_under_its_label():
    from libragrad_fx.bench.demo import OTHER_OUTLINE, TARGET_OUTLINE, DemoResult

    def row(target, method, backward, rel):
        return {"target": target, "method": method, "backward": backward, "logit": 1.5, "attributed": 1.5 * (1 + rel),
                "abs_error": 1.5 * rel, "rel_error": rel, "share": 0.61, "more_on_target": True}

    rows = [row(t, m, b, 30.0 if m == "IxG" else 1e-7) for b in ("vanilla", "libragrad") for m in ("IxG", "FullGrad")
            for t in ("cross", "star")]
    text = DemoResult("demo.png", ("cross", "star"), "vit", rows, folded_stem=True).text()
    lines = text.splitlines()
    header = _spans(lines[1])
    assert len(header) == 8
    for line in lines[2:2 + len(rows)]:
        cells = _spans(line)
        assert len(cells) == len(header), line
        assert [c[0] for c in cells[:3]] == [h[0] for h in header[:3]]  # words: left-aligned under their label
        assert [c[1] for c in cells[3:]] == [h[1] for h in header[3:]]  # numbers: right-aligned under theirs
    assert "why IxG misses the logit" in text and "folded in" in text
    complete = DemoResult("demo.png", ("cross", "star"), "vit", [row("cross", "IxG", "libragrad", 1e-7)])
    assert "why IxG" not in complete.text()  # an error of rounding size needs no explanation
    assert {TARGET_OUTLINE["colors"], OTHER_OUTLINE["colors"]}.isdisjoint({"red", "blue"})  # red and blue: the map's
