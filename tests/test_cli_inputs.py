"""The command line checks what it is given before it works: numbers in range, an --out it can write,
checkpoints and programs that are what they claim. Each refusal is one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import json
import zipfile

import pytest
import timm
import torch
from archs import SMALL

from libragrad_fx.cli import main

KWARGS = {**SMALL, "num_classes": 5}
VIT = ["timm:vit_small_patch16_224", "--model-kwargs", json.dumps(KWARGS)]
MLP = ["cli_models:tiny_mlp", "--input-shape", "2,3,4,4"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, argv: list[str], *expected: str) -> str:
    code, out, err = cli(capsys, *argv)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("libragrad-fx"), err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model fails the test: whatever is refused must be refused before any work."""
    import libragrad_fx.bench.demo
    import libragrad_fx.cli.commands  # noqa: F401  (imported first: they bind the real common.load)
    import libragrad_fx.cli.common as common

    def load(args):
        raise AssertionError("the command started work before checking its options")

    monkeypatch.setattr(common, "load", load)
    for name in ("inspect", "explain", "export"):
        monkeypatch.setattr(f"libragrad_fx.cli.commands.{name}.load", load)
    monkeypatch.setattr("libragrad_fx.bench.demo.run", load)


NUMBERS = {
    "negative tol": (["check", *MLP, "--tol", "-1"], "--tol", "must be a positive number, got -1"),
    "zero tol": (["check", *MLP, "--tol", "0"], "--tol", "must be a positive number"),
    "nan tol": (["check", *MLP, "--tol", "nan"], "--tol", "must be a positive number"),
    "text tol": (["check", *MLP, "--tol", "small"], "--tol", "is not a number"),
    "negative context": (["diff", *MLP, "--context", "-5"], "--context", "must be 0 or more, got -5"),
    "negative target": (["explain", *MLP, "--random", "--target", "-1", "--out", "x.png"], "--target", "0 or more"),
    "negative seed": (["inspect", *MLP, "--seed", "-3"], "--seed", "between 0 and"),
    "huge seed": (["inspect", *MLP, "--seed", str(2**64)], "--seed", "between 0 and"),
    "demo seed": (["demo", "--seed", "-1"], "--seed", "between 0 and"),
    "bench n": (["bench", "--n", "0"], "--n", "at least 1, got 0"),
    "bench jobs": (["bench", "--jobs", "-2"], "--jobs", "at least 1"),
    "bench ig steps": (["bench", "--ig-steps", "2.5"], "--ig-steps", "is not an integer"),
}


@pytest.mark.parametrize("case", list(NUMBERS))
def test_numbers_out_of_range_are_refused(capsys, no_work, case):
    argv, option, message = NUMBERS[case]
    refused(capsys, argv, option, message)


def test_out_is_checked_before_any_work(capsys, no_work, tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    for argv, suffix in ((["explain", *MLP, "--random"], "map.png"), (["export", *MLP], "m.pt2"),
                         (["inspect", *MLP], "g.dot"), (["demo"], "demo.png")):
        out = str(missing / suffix)
        refused(capsys, [*argv, "--out", out], "--out", "does not exist", "create it first")
    (tmp_path / "folder.png").mkdir()
    refused(capsys, ["explain", *MLP, "--random", "--out", str(tmp_path / "folder.png")], "is a folder")
    refused(capsys, ["export", *MLP, "--out", str(tmp_path / "model.pt")], "must end in .pt2")
    refused(capsys, ["demo", "--out", str(tmp_path / "demo.jpg")], "must end in .png")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    refused(capsys, ["export", *MLP, "--out", str(blocker / "m.pt2")], "does not exist")


def test_an_unwritable_out_is_refused_before_any_work(capsys, no_work, tmp_path, monkeypatch):
    import os

    real = os.access
    # the tests may run as root, for whom every folder is writable: the folder says no instead
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real(path, mode))
    refused(capsys, ["export", *MLP, "--out", str(tmp_path / "m.pt2")], "no permission to write")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    model = timm.create_model("vit_small_patch16_224", pretrained=False, **KWARGS)
    deeper = timm.create_model("vit_small_patch16_224", pretrained=False, **{**KWARGS, "depth": 3})
    wider_head = timm.create_model("vit_small_patch16_224", pretrained=False, **{**KWARGS, "num_classes": 7})
    paths = {"empty": root / "empty.pth", "garbage": root / "garbage.pth", "text": root / "text.safetensors",
             "list": root / "list.pth", "deeper": root / "deeper.pth", "shallower": root / "shallower.pth",
             "head": root / "head.pth", "pickled": root / "pickled.pth", "nested": root / "nested.pth"}
    paths["empty"].write_bytes(b"")
    paths["garbage"].write_bytes(b"not a checkpoint at all\n" * 10)
    paths["text"].write_text("hello")
    torch.save([1, 2, 3], paths["list"])
    torch.save(deeper.state_dict(), paths["deeper"])
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.1.")}, paths["shallower"])
    torch.save(wider_head.state_dict(), paths["head"])
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, paths["pickled"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, paths["nested"])
    return paths, model


CHECKPOINTS = {
    "empty": ("is empty (0 bytes)",),
    "garbage": ("is not a PyTorch checkpoint", "torch.load cannot read it"),
    "text": ("is not a safetensors file",),
    "list": ("holds a list, not a state dict",),
    "pickled": ("holds Python objects besides tensors", "torch.save(model.state_dict(), FILE)"),
    "deeper": ("does not fit", "12 unexpected (blocks.2.norm1.weight, blocks.2.norm1.bias, blocks.2.attn.qkv.weight, "
                               "... (9 more))"),
    "shallower": ("does not fit", "12 of the model's 32 keys missing (blocks.1.norm1.weight, ", "(9 more)"),
    "head": ("does not fit", "2 of another shape (head.weight (7, 64) in the file, (5, 64) in the model"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_a_checkpoint_that_does_not_fit_says_what_is_wrong(capsys, files, case):
    paths, _ = files
    err = refused(capsys, ["inspect", *VIT, "--checkpoint", str(paths[case])], *CHECKPOINTS[case])
    assert str(paths[case]) in err


def test_a_nested_checkpoint_with_ddp_prefixes_loads(files):
    from libragrad_fx.cli.checkpoint import load_checkpoint

    paths, model = files
    fresh = timm.create_model("vit_small_patch16_224", pretrained=False, **KWARGS)
    load_checkpoint(fresh, str(paths["nested"]))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_a_pt2_that_is_no_program_says_so(capsys, tmp_path):
    not_zip = tmp_path / "text.pt2"
    not_zip.write_text("hello")
    refused(capsys, ["inspect", str(not_zip)], "cannot load", "not a zip archive")
    state = tmp_path / "weights.pt2"
    torch.save(torch.nn.Linear(2, 2).state_dict(), state)
    refused(capsys, ["inspect", str(state)], "a torch.save file", "--checkpoint")
    other = tmp_path / "other.pt2"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes/readme.txt", "hi")
    err = refused(capsys, ["inspect", str(other)], "a zip archive without a torch.export program")
    assert "warnings above" not in err
