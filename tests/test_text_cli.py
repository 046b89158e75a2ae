"""The command line on saved Hugging Face directories: ``explain hf:DIR --text``, and ``inspect``, ``diff``,
``check``, ``export`` on ``hf:`` models (tiny random models from tests/text_models.py)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from libragrad_fx.cli import main  # noqa: E402
from text_models import save  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hfcli")
    return {kind: save(kind, str(root / kind)) for kind in ("classifier", "causal-lm", "sentence-encoder")}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("kind,extra", [("classifier", ["--target", "negative"]),
                                        ("causal-lm", ["--target", "not good"]),
                                        ("sentence-encoder", ["--pair", "a great plot"])])
def test_explain_json_is_complete_for_libragrad_fullgrad(capsys, dirs, kind, extra):
    code, out, err = cli(capsys, "explain", f"hf:{dirs[kind]}", "--text", "the movie was", "--json", *extra)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) >= {"tokens", "scores", "target", "value", "completeness", "method", "preset"}
    assert data["method"] == "fullgrad" and data["preset"] == "libragrad"
    assert len(data["tokens"]) == len(data["scores"]) and data["completeness"] <= 1e-4


def test_explain_compare_writes_terminal_html_and_png(capsys, dirs, tmp_path):
    page, png = tmp_path / "a.html", tmp_path / "a.png"
    code, out, err = cli(capsys, "explain", f"hf:{dirs['classifier']}", "--text", "the movie was not good",
                         "--compare", "--method", "ixg", "--html", str(page), "--out", str(png))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["vanilla", "input_x_gradient:", "target"]
    assert any(line.split()[:1] == ["libragrad"] for line in lines)
    html = page.read_text()
    assert html.count('class="panel"') == 2 and html.count('class="tok"') == 14 and 'title="' in html
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_text_errors_are_one_line_with_exit_2(capsys, dirs, tmp_path):
    code, _, err = cli(capsys, "explain", "hf:no-such-model", "--text", "hi")
    assert code == 2 and "not a local directory" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "explain", f"hf:{dirs['classifier']}", "--text", "hi", "--target", "happy")
    assert code == 2 and "unknown label 'happy'" in err
    code, _, err = cli(capsys, "explain", f"hf:{dirs['sentence-encoder']}", "--text", "hi")
    assert code == 2 and "--pair" in err
    code, _, err = cli(capsys, "explain", f"hf:{dirs['classifier']}", "--text", "hi", "--method", "gradcam")
    assert code == 2 and "unknown method 'gradcam'" in err
    code, _, err = cli(capsys, "explain", f"hf:{dirs['classifier']}", "--random", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "--text" in err


def test_inspect_accepts_hf_models(capsys, dirs):
    code, out, err = cli(capsys, "inspect", f"hf:{dirs['classifier']}", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["capture"] == "export" and data["unclassified"] == []
    assert set(data["rewrites"]) == {"attention", "nonlinearity", "normalization"}
    assert data["input_shape"][:2] == [1, 11]  # [CLS] + the nine words of the sample + [SEP]


@pytest.mark.slow
def test_diff_check_export_accept_hf_models(capsys, dirs, tmp_path):
    model = f"hf:{dirs['classifier']}"
    code, out, err = cli(capsys, "diff", model)
    assert code == 0 and "layer_norm" in out, err
    code, out, err = cli(capsys, "check", model, "--json")
    assert code == 0, err
    assert json.loads(out)["ok"]
    path = str(tmp_path / "cls.pt2")
    code, out, err = cli(capsys, "export", model, "--out", path)
    assert code == 0 and "forward bit-identical" in out, err
