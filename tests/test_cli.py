"""The command line on a small timm ViT: every command, its output formats and exit codes.

In-process through ``main(argv)`` (torch and timm load once); two subprocess runs check the
installed entry point end to end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from archs import SMALL

import libragrad_fx as lf
from libragrad_fx.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KWARGS = {**SMALL, "num_classes": 5}
VIT = ["timm:vit_small_patch16_224", "--model-kwargs", json.dumps(KWARGS)]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def vit_report() -> lf.Report:
    """What the library itself reports for the same model: the CLI must show exactly this."""
    model = timm.create_model("vit_small_patch16_224", pretrained=False, **KWARGS).eval()
    return lf.transform(model, torch.randn(1, 3, SMALL["img_size"], SMALL["img_size"])).libragrad_report


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("export") / "vit.pt2")
    assert main(["export", *VIT, "--out", path]) == 0
    return path


def test_inspect_json_lists_every_rewrite_and_unclassified_op(capsys, vit_report):
    code, out, err = cli(capsys, "inspect", *VIT, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["capture"] == "fx" and data["nodes"] == vit_report.nodes
    assert data["input_shape"] == [1, 3, SMALL["img_size"], SMALL["img_size"]]
    assert data["rewrites"] == vit_report.rewrites == {"attention": 2, "nonlinearity": 2, "normalization": 5}
    rows = {(r["node"], r["op"], r["family"], r["rule"]) for r in data["rewritten"]}
    assert rows == {(r.node, r.op, r.family, r.rule) for r in vit_report.rewritten}
    assert data["unclassified"] == []


def test_inspect_text_groups_rewrites_by_family(capsys, vit_report):
    code, out, _ = cli(capsys, "inspect", *VIT)
    assert code == 0
    assert "capture: fx" in out and "unclassified: none" in out
    blocks = {block.splitlines()[0]: block for block in out.split("\n\n")}
    assert vit_report.backward  # the fused qkv and the attention are pruned on a ViT
    for title, rows in (("rewritten", vit_report.rewritten), ("backward pruned", vit_report.backward)):
        for row in rows:
            block = next(b for t, b in blocks.items() if t.startswith(f"{title}") and f", {row.family} (" in t)
            rule_line = next(line for line in block.splitlines() if line.startswith(f"  {row.op}: "))
            assert row.rule in rule_line
            assert row.node in block.replace(",", " ").split()


def test_inspect_reports_unclassified_ops(capsys):
    """An op no pass knows must show up, not vanish."""
    code, out, _ = cli(capsys, "inspect", "cli_models:odd_activation", "--input-shape", "2,3,4,4", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert len(data["unclassified"]) == 1 and "i0e" in data["unclassified"][0]["op"]
    assert {"node", "op"} <= set(data["unclassified"][0])


def test_inspect_dot_colours_rewritten_nodes(capsys, tmp_path, vit_report):
    path = tmp_path / "vit.dot"
    code, _, _ = cli(capsys, "inspect", *VIT, "--format", "dot", "--out", str(path))
    assert code == 0
    dot = path.read_text()
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    filled = {line.split('"')[1] for line in dot.splitlines() if "fillcolor" in line and "legend_" not in line}
    # every node the report names, and every detach / custom op the rewriter inserted
    assert {r.node for r in vit_report.rewritten if r.node in dot} <= filled | {r.node for r in vit_report.rewritten}
    assert {"detach", "gelu_default", "layer_norm_default"} <= filled
    assert {"attention_default", "linear_cols_default"} <= filled  # the backward-pruned attention and qkv
    assert "legend_attention" in dot and "legend_pruning" in dot and "legend_normalization" in dot and "legend_nonlinearity" in dot


def test_diff_shows_each_rewritten_node_and_the_code(capsys, vit_report):
    code, out, _ = cli(capsys, "diff", *VIT, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert {c["node"] for c in data["changes"]} == {r.node for r in vit_report.rewritten + vit_report.backward}
    gelu = next(c for c in data["changes"] if c["node"] == "blocks_0_mlp_act")
    assert gelu["family"] == "nonlinearity" and "libragrad.gelu" in gelu["added"][0]
    assert "mlp.act(" in gelu["removed"][0]
    sdpa = next(c for c in data["changes"] if c["node"] == "scaled_dot_product_attention")
    assert sum(".detach()" in line for line in sdpa["added"]) == 2  # query and key
    assert data["code_diff"].startswith("---") and "+    detach = " in data["code_diff"]

    code, text, _ = cli(capsys, "diff", *VIT, "--preset", "no-attention")
    assert code == 0
    assert "[attention]" not in text and "detach = " not in text  # the ablation leaves attention vanilla
    assert "[normalization]" in text and "libragrad.layer_norm" in text


def test_export_then_every_reader_accepts_the_file(capsys, exported, vit_report):
    code, out, _ = cli(capsys, "inspect", exported, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["rewrites"] == vit_report.rewrites
    # the rule nodes are in the program itself, not only in the recorded report
    assert set(data["file"]["program_rule_nodes"]) == {"attention", "nonlinearity", "normalization", "pruning"}
    code, out, _ = cli(capsys, "inspect", exported, "--format", "dot")
    assert code == 0 and "fillcolor" in out


def test_a_plain_torch_export_file_is_a_model_like_any_other(capsys, tmp_path):
    """A .pt2 not written by `export` (no LibraGrad rules in it) is transformed like any model."""
    model = timm.create_model("vit_small_patch16_224", pretrained=False, **KWARGS).eval()
    path = str(tmp_path / "plain.pt2")
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 32, 32),), strict=False), path)
    code, out, err = cli(capsys, "inspect", path, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["rewrites"] == {"attention": 2, "nonlinearity": 2, "normalization": 5}
    code, out, err = cli(capsys, "diff", path, "--format", "json")
    assert code == 0 and json.loads(out)["changes"], err


def test_export_output_states_the_round_trip(capsys, tmp_path):
    path = tmp_path / "vit.pt2"
    code, out, _ = cli(capsys, "export", *VIT, "--out", str(path))
    assert code == 0 and path.is_file()
    assert "reloaded: forward bit-identical" in out and "rel. difference 0.0e+00" in out


def test_factory_spec_and_input_shape(capsys):
    code, out, err = cli(capsys, "inspect", "cli_models:tiny_mlp", "--model-kwargs", '{"width": 6}',
                         "--input-shape", "2,3,4,4", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["input_shape"] == [2, 3, 4, 4] and data["rewrites"] == {"nonlinearity": 1, "normalization": 1}


def test_checkpoint_is_loaded(capsys, tmp_path):
    """Two runs with different seeds agree once both load the same weights."""
    model = timm.create_model("vit_small_patch16_224", pretrained=False, **KWARGS)
    path = tmp_path / "vit.pth"
    torch.save(model.state_dict(), path)
    outputs = []
    for seed in ("1", "2"):
        out_path = tmp_path / f"vit{seed}.pt2"
        assert main(["export", *VIT, "--checkpoint", str(path), "--seed", seed, "--out", str(out_path)]) == 0
        outputs.append(torch.export.load(str(out_path)).module()(torch.ones(1, 3, 32, 32)))
    capsys.readouterr()
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(outputs[0], model.eval()(torch.ones(1, 3, 32, 32)))


BAD_INPUT = {
    "unknown timm name": (["inspect", "timm:vit_smal_patch16_224"], "did you mean timm:vit_small_patch16_224"),
    "bare timm name": (["inspect", "vit_small_patch16_224"], "did you mean timm:vit_small_patch16_224"),
    "unknown name": (["inspect", "no_such_model"], "use timm:NAME"),
    "bad preset": (["inspect", *VIT, "--preset", "libragard"], "invalid choice: 'libragard'"),
    "malformed shape": (["inspect", *VIT, "--input-shape", "1,3,x"], "bad input shape"),
    "wrong shape": (["inspect", *VIT, "--input-shape", "1,3,48,48"], "pass --input-shape"),
    "no shape known": (["inspect", "cli_models:tiny_mlp"], "pass --input-shape"),
    "bad kwargs json": (["inspect", *VIT[:1], "--model-kwargs", "{img_size: 32}"], "not JSON"),
    "unknown kwarg": (["inspect", "timm:vit_small_patch16_224", "--model-kwargs", '{"nope": 1}'], "nope"),
    "not a module": (["inspect", "cli_models:not_a_model"], "not an nn.Module"),
    "missing module": (["inspect", "no_such_package.models:build"], "cannot import"),
    "missing .pt2": (["inspect", "missing.pt2"], "no such file"),
    "missing checkpoint": (["inspect", *VIT, "--checkpoint", "missing.pth"], "no such checkpoint"),
    "untraceable model": (["inspect", "cli_models:untraceable", "--input-shape", "2,3,8,8"], "cannot capture"),
    "export suffix": (["export", *VIT, "--out", "model.pt"], "must end in .pt2"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_code_2(capsys, case):
    argv, expected = BAD_INPUT[case]
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err and "Traceback" not in err
    assert err.startswith("libragrad-fx")


def test_a_corrupt_pt2_is_one_line(capsys, tmp_path):
    path = tmp_path / "broken.pt2"
    path.write_bytes(b"not a zip archive")
    code, _, err = cli(capsys, "inspect", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot load" in err, err


def test_pt2_readers_that_need_the_original_model_say_so(capsys, exported):
    code, _, err = cli(capsys, "diff", exported)
    assert code == 2 and "needs the original model" in err


def test_debug_shows_the_traceback(capsys):
    code, _, err = cli(capsys, "--debug", "inspect", "cli_models:untraceable", "--input-shape", "2,3,8,8")
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("libragrad-fx: error: cannot capture")


def test_bundled_model_spec(capsys):
    try:
        from libragrad_fx.bench import models
    except ImportError:
        pytest.skip("libragrad_fx.bench.models (the bundled models) is not installed")
    if not models.names():
        pytest.skip("libragrad_fx.bench.models ships no trained weights yet (names() is empty)")
    name = models.names()[0]
    code, out, err = cli(capsys, "inspect", name, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["rewrites"] and data["input_shape"][-1] == models.card(name)["kwargs"]["img_size"]


def _subprocess(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "libragrad_fx", *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_entry_point_end_to_end():
    done = _subprocess("inspect", *VIT, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rewrites"] == {"attention": 2, "nonlinearity": 2, "normalization": 5}
    done = _subprocess("inspect", "timm:vit_smal_patch16_224")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def test_console_script_is_declared():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["libragrad-fx"] == "libragrad_fx.cli:main"


# --- check and explain (they run the attribution layer, libragrad_fx.attr) -------------------------


def test_check_holds_on_vit_and_exits_0(capsys):
    code, out, err = cli(capsys, "check", *VIT, "--json")
    assert code == 0, out + err
    data = json.loads(out)
    assert data["ok"] is True
    names = [c["name"] for c in data["checks"]]
    assert names == ["forward bit-identical", "FullGrad completeness", "bias-free Input x Gradient completeness",
                     "local completeness (every op)"]
    assert all(c["ok"] is True for c in data["checks"])
    assert all(c["error"] < 1e-4 for c in data["checks"][1:])
    assert {"transform", "transformed fwd+bwd", "vanilla fwd+bwd", "ratio"} <= set(data["timings"])


def test_check_fails_with_exit_1_when_a_family_is_off(capsys):
    """no-norm leaves LayerNorm's backward vanilla: completeness must break, and say where."""
    code, out, _ = cli(capsys, "check", *VIT, "--preset", "no-norm")
    assert code == 1
    assert "FAIL FullGrad completeness" in out and "FAIL local completeness" in out
    assert "layer_norm (F.layer_norm" in out and "some checks do not hold" in out


def test_check_reads_an_exported_file(capsys, exported):
    code, out, err = cli(capsys, "check", exported, "--json")
    assert code == 0, out + err
    checks = json.loads(out)["checks"]
    assert checks[0]["name"] == "forward = recorded at export" and all(c["ok"] for c in checks)


def test_check_reads_every_rule_back_from_an_exported_file(capsys, tmp_path):
    """EVA02's SwiGLU halving (scale_grad), like every rule, is one custom op in the exported program:
    the completeness analysis reads the file back and every check holds, as on the original model."""
    path = str(tmp_path / "eva02.pt2")
    eva = ["timm:eva02_tiny_patch14_224", "--model-kwargs", json.dumps({"img_size": 28, "depth": 1})]
    assert main(["export", *eva, "--out", path]) == 0
    capsys.readouterr()
    for spec in ([path], eva):
        code, out, _ = cli(capsys, "check", *spec, "--json")
        checks = json.loads(out)["checks"]
        assert code == 0 and all(c["ok"] is True for c in checks), checks


def test_explain_reads_an_exported_file(capsys, exported, tmp_path):
    code, out, err = cli(capsys, "explain", exported, "--random", "--method", "fullgrad",
                         "--out", str(tmp_path / "file.png"), "--json")
    assert code == 0, err
    (numbers,) = json.loads(out)["explanations"]
    assert numbers["preset"] == "libragrad" and numbers["rel_error"] < 1e-4
    code, _, err = cli(capsys, "explain", exported, "--random", "--compare", "--out", str(tmp_path / "c.png"))
    assert code == 2 and "needs the original model" in err


def test_explain_writes_a_png_and_the_numbers(capsys, tmp_path):
    from PIL import Image

    image = tmp_path / "in.png"
    pixels = torch.rand(40, 56, 3, generator=torch.Generator().manual_seed(0)) * 255
    Image.fromarray(pixels.byte().numpy()).save(image)
    out_png = tmp_path / "map.png"
    code, out, err = cli(capsys, "explain", *VIT, "--image", str(image), "--method", "fullgrad", "--compare",
                         "--target", "3", "--out", str(out_png), "--json")
    assert code == 0, err
    with Image.open(out_png) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1]  # two panels side by side
    vanilla, libragrad = json.loads(out)["explanations"]
    assert vanilla["preset"] == "vanilla" and libragrad["preset"] == "libragrad"
    assert vanilla["target"] == libragrad["target"] == 3 and vanilla["logit"] == libragrad["logit"]
    assert libragrad["rel_error"] < 1e-4 < vanilla["rel_error"]


@pytest.mark.parametrize("method", ["ixg", "gradcam", "gae"])
def test_explain_random_input_text_output(capsys, tmp_path, method):
    out_png = tmp_path / f"{method}.png"
    code, out, err = cli(capsys, "explain", *VIT, "--random", "--method", method, "--out", str(out_png))
    assert code == 0, err
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"libragrad  {method}: target " in out
    assert ("error" in out) == (method == "ixg")  # completeness is defined for additive maps only


def test_explain_bad_input(capsys, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    for argv, expected in [(["--image", str(broken)], "cannot read image"),
                           (["--random", "--target", "7"], "out of range: the model has 5 classes")]:
        code, _, err = cli(capsys, "explain", *VIT, *argv, "--out", str(tmp_path / "x.png"))
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
