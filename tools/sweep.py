"""Sweep the timm zoo: does ``libragrad_fx.transform`` hold on architectures nobody wrote a rule for?

One smallest variant per ``timm.models`` module (random weights, small images, batch 2), plus the
named families (each testing a general rule) that share a module with another (gMLP/ResMLP in ``mlp_mixer``,
PoolFormer in ``metaformer``, CoAtNet in ``maxxvit``, ...). Per model:

* capture path (``fx``, ``fx+timm-leaves``, ``export``) or the capture error;
* forward exactness (``torch.equal`` with the model, and the max abs difference);
* FullGrad completeness (:func:`libragrad_fx.completeness`, biases found from the graph) < 1e-4;
* local completeness (:func:`libragrad_fx.node_completeness`): the ops where y != J~x + b under the
  rewritten backward; those not in the report's ``unclassified`` list are *silent* (an
  input-dependent op neither rewritten nor reported);
* bias-free Input x Gradient completeness: every parameter or buffer that is an additive constant
  (biases, positional embeddings, class/register tokens, BatchNorm running means; by name, not by
  the analysis under test) is zeroed, and |sum(x * grad) - f(x)| / |f(x)| must be < 1e-4 (in float64,
  like FullGrad: the identity, whatever the CPU's kernels). A model
  with additive constants that are not parameters (a computed positional encoding, a literal) is
  ``n/a`` with the nodes that carry them;
* rewrites per family, unclassified ops, transform time.

Usage (from the repository root)::

    python tools/sweep.py --all                 # everything: CSV + SUMMARY.md under docs/sweep/
    python tools/sweep.py --subset ci           # the dozen families CI runs (tests/test_sweep.py)
    python tools/sweep.py --models convnext,swin_transformer --out /tmp/sweep
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import gc
import json
import re
import signal
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import libragrad_fx as lf  # noqa: E402
from libragrad_fx.attr import FullGrad  # noqa: E402

TOLERANCE = 1e-4
TARGET = 1
BATCH = 2
SIZES = (64, 96, 128, 160, 224)

# family -> timm model. The smallest variant (by parameter count, among the names that say
# so) of each timm.models module, chosen once on timm 1.0.31; then the named families that
# live in a module with another.
MODULES: dict[str, str] = {
    "beit": "beit_base_patch16_224", "byoanet": "halonet_h1", "byobnet": "mobileone_s0",
    "cait": "cait_xxs24_224", "coat": "coat_tiny", "convit": "convit_tiny", "convmixer": "convmixer_768_32",
    "convnext": "convnext_atto_rms", "cpubone": "cpubone_nano", "crossvit": "crossvit_tiny_240",
    "csatv2": "csatv2", "cspnet": "cs3darknet_focus_s", "cspnext": "cspnext_tiny", "davit": "davit_tiny",
    "deepseek_vit": "deepseek_vit_412m", "deit": "deit_tiny_patch16_224", "densenet": "densenet121",
    "dla": "dla46_c", "dpn": "dpn48b", "edgenext": "edgenext_xx_small", "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0", "efficientnet": "tinynet_e", "efficientvim": "efficientvim_m1",
    "efficientvit_mit": "efficientvit_b0", "efficientvit_msra": "efficientvit_m0",
    "eva": "vit_tiny_patch16_dinov3_qkvb", "fasternet": "fasternet_t0", "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf", "gcvit": "gcvit_xxtiny", "gemma4_vit": "gemma4_vit_167m",
    "ghostnet": "ghostnet_050", "hardcorenas": "hardcorenas_b", "hgnet": "hgnetv2_b0", "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny", "hrnet": "hrnet_w18_small", "iformer": "iformer_t",
    "inception_next": "inception_next_atto", "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3", "inception_v4": "inception_v4", "lcnetv2": "lcnetv2_small",
    "levit": "levit_128s", "lowformer": "lowformer_b0", "mambaout": "mambaout_femto",
    "maxxvit": "maxvit_pico_rw_256", "metaformer": "caformer_s18", "mlp_mixer": "gmlp_ti16_224",
    "mobilenetv3": "mobilenetv3_small_050", "mobilenetv5": "mobilenetv5_base", "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny", "naflexvit": "naflexvit_base_patch16_parfac_gap", "nasnet": "nasnetalarge",
    "nest": "nest_tiny", "nextvit": "nextvit_small", "nfnet": "nf_regnet_b0", "pit": "pit_xs_224",
    "pnasnet": "pnasnet5large", "pvt_v2": "pvt_v2_b0", "qwen3_vit": "qwen3_vit_88m", "rdnet": "rdnet_tiny",
    "regnet": "regnetx_002", "repghost": "repghostnet_050", "repvit": "repvit_m1", "res2net": "res2next50",
    "resnest": "resnest14d", "resnet": "resnet10t", "resnetv2": "resnetv2_18", "rexnet": "rexnet_100",
    "selecsls": "selecsls42", "senet": "legacy_seresnet18", "sequencer": "sequencer2d_s", "shvit": "shvit_s1",
    "sknet": "skresnet18", "starnet": "starnet_s050", "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_tiny_patch4_window7_224", "swin_transformer_v2": "swinv2_tiny_window8_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224", "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224", "tresnet": "tresnet_m", "twins": "twins_svt_small", "vgg": "vgg11",
    "visformer": "visformer_tiny", "vision_transformer": "vit_tiny_patch16_224",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224", "vision_transformer_relpos": "vit_srelpos_small_patch16_224",
    "vision_transformer_sam": "samvit_base_patch16_224", "vitamin": "vitamin_small_224", "volo": "volo_d1_224",
    "vovnet": "vovnet39a", "xception": "legacy_xception", "xception_aligned": "xception41p",
    "xcit": "xcit_nano_12_p8_224",
}
NAMED: dict[str, str] = {
    "mlp_mixer/mixer": "mixer_s32_224", "mlp_mixer/resmlp": "resmlp_12_224",
    "metaformer/poolformer": "poolformer_s12", "metaformer/poolformerv2": "poolformerv2_s12",
    "maxxvit/coatnet": "coatnet_pico_rw_224", "efficientnet/efficientnet_b0": "efficientnet_b0",
    "pvt_v2/pvt_v2_b0": "pvt_v2_b0",
}
FAMILIES: dict[str, str] = {**MODULES, **NAMED}
# The few giants (80M-400M parameters, gigabytes of activations) run with two blocks.
SHRINK: dict[str, dict[str, Any]] = {name: {"depth": 2} for name in (
    "beit_base_patch16_224", "deepseek_vit_412m", "gemma4_vit_167m", "naflexvit_base_patch16_parfac_gap",
    "qwen3_vit_88m", "samvit_base_patch16_224")}
SHRINK["sequencer2d_s"] = {"layers": (1, 1, 2, 1)}  # each LSTM is unrolled over its tokens for the backward
# The named families, each testing a general rule, and where they are in the sweep.
NAMED_FAMILIES: dict[str, tuple[str, ...]] = {
    "Swin / SwinV2 (window attention, relative position bias, shift masks)":
        ("swin_transformer", "swin_transformer_v2", "swin_transformer_v2_cr"),
    "ConvNeXt (channels-first LayerNorm)": ("convnext",), "CaiT (class attention, talking heads)": ("cait",),
    "XCiT (cross-covariance attention, L2-normalised q/k)": ("xcit",), "ConViT (gated positional attention)": ("convit",),
    "gMLP (spatial gating unit)": ("mlp_mixer",), "ResMLP (affine layers)": ("mlp_mixer/resmlp",),
    "PoolFormer (GroupNorm)": ("metaformer/poolformer", "metaformer/poolformerv2"),
    "LeViT (hard-swish, attention biases)": ("levit",), "MaxViT / CoAtNet": ("maxxvit", "maxxvit/coatnet"),
    "EfficientFormer / V2": ("efficientformer", "efficientformer_v2"), "MobileViT": ("mobilevit",),
    "PVTv2": ("pvt_v2",), "Twins": ("twins",), "CrossViT": ("crossvit",), "DaViT (channel attention)": ("davit",),
    "FocalNet (focal modulation: nested products)": ("focalnet",), "Hiera": ("hiera",), "TinyViT": ("tiny_vit",),
    "FastViT": ("fastvit",), "EdgeNeXt": ("edgenext",), "Sequencer2d (LSTM)": ("sequencer",),
    "ResNet (nothing to rewrite)": ("resnet",),
    "EfficientNet / MobileNetV3 (SiLU, hard-swish, squeeze-excite)":
        ("efficientnet", "efficientnet/efficientnet_b0", "mobilenetv3"),
}
# CI's subset: each of the general rules at least once, fast to run.
CI_SUBSET = ("resnet", "efficientnet", "mobilenetv3", "convnext", "swin_transformer", "cait", "xcit",
             "mlp_mixer", "mlp_mixer/resmlp", "metaformer/poolformer", "levit", "focalnet")

# Parameters and buffers that enter the model additively, by the name their modules give them.
ADDITIVE = re.compile(r"(^|[._])bias(_\w+)?$|(^|\.)beta$|running_mean$|pos_?emb|position_?emb|(^|[._])(cls|reg|dist)_tokens?([._]?\d+)?(\.|$)"
                      r"|(^|[._])(patch|pixel)_pos(\.|$)")


@dataclass
class Row:
    family: str
    model: str
    params_m: float = 0.0
    img: int = 0
    capture: str = ""
    status: str = ""
    reason: str = ""
    forward_exact: bool | None = None
    forward_max_diff: float | None = None
    local_incomplete: int | None = None
    local_nodes: str = ""
    silent: int | None = None
    ixg_bias_free: float | None = None
    ixg_vanilla: float | None = None
    ixg_status: str = ""
    fullgrad: float | None = None
    """FullGrad completeness evaluated in float64: the identity, free of float32 rounding."""
    fullgrad_f32: float | None = None
    rewrites: dict[str, int] = field(default_factory=dict)
    unclassified: int | None = None
    unclassified_ops: str = ""
    transform_s: float | None = None
    notes: str = ""


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def fire(signum, frame):
        raise _Timeout(f"timed out after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def randomize_zeros(model: nn.Module, std: float = 0.02) -> nn.Module:
    """timm zero-initialises many biases, tokens and heads: re-draw them so nothing vanishes."""
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.normal_(0.0, std)
    return model


def zero_additive_constants(*modules: nn.Module) -> list[str]:
    """Zero every parameter and buffer whose name says it is additive; returns the names."""
    names = []
    with torch.no_grad():
        for module in modules:
            for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
                if tensor.is_floating_point() and ADDITIVE.search(name):
                    tensor.zero_()
                    names.append(name)
    return names


def _first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The model at the smallest image size it accepts (random weights, eval mode) and a batch."""
    import timm

    errors = []
    default = timm.get_pretrained_cfg(name).input_size[-1] if timm.get_pretrained_cfg(name) else SIZES[-1]
    for size in sorted(set(SIZES) | {default}):
        for kwargs in ({"img_size": size}, {}):
            torch.manual_seed(seed)
            try:
                model = timm.create_model(name, pretrained=False, **kwargs, **SHRINK.get(name, {}))
            except Exception as error:  # the constructor takes no img_size, or not this one
                errors.append(error)
                continue
            model = randomize_zeros(model).eval()
            x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
            try:
                with torch.no_grad():
                    model(x)
            except Exception as error:
                errors.append(error)
                continue
            return model, x
    raise RuntimeError(f"no input size up to {default} works: {_first_line(errors[-1])}")


def in_float64(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A float64 copy of ``gm`` (sharing nothing), the float32 an exported graph bakes into its
    factories and casts included: completeness is an identity, and a float32 sum over tens of
    thousands of terms rounds at 1e-4 of the largest."""
    gm = copy.deepcopy(gm).double()
    for module in gm.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                node.args, node.kwargs = torch.fx.node.map_aggregate(
                    (node.args, node.kwargs), lambda a: torch.float64 if a is torch.float32 else a)
            module.recompile()
    return gm


def ixg_error(model: nn.Module, x: torch.Tensor) -> float:
    """|sum(x * grad) - f(x)| / |f(x)| on the target logit, worst over the batch."""
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[:, TARGET].sum(), x)
    total = (x * grad).flatten(1).sum(1)
    logit = out[:, TARGET].detach()
    return float(((total - logit).abs() / logit.abs().clamp_min(1e-12)).max())


def _nodes_text(checks, limit: int = 4) -> str:
    shown = [f"{c.node}:{c.op}" for c in checks[:limit]]
    more = f" (+{len(checks) - limit})" if len(checks) > limit else ""
    return "; ".join(shown) + more


def run_family(family: str, model_name: str | None = None, timeout: int = 900) -> Row:
    """Build, transform and check one family; never raises (failures are rows)."""
    name = model_name or FAMILIES[family]
    row = Row(family, name)
    if name in SHRINK:
        row.notes = "built with " + ", ".join(f"{k}={v}" for k, v in SHRINK[name].items())
    try:
        with time_limit(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run(row)
    except _Timeout as error:
        row.status, row.reason = "error", str(error)
    except Exception as error:
        row.status = row.status or "error"
        row.reason = row.reason or f"{_first_line(error)} [{_where(error)}]"
    gc.collect()
    return row


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _run(row: Row) -> None:
    try:
        model, x = build(row.model)
    except Exception as error:
        row.status, row.reason = "build-failed", _first_line(error)
        return
    row.img = x.shape[-1]
    row.params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    start = time.perf_counter()
    try:
        gm = lf.transform(model, x, verify=False)
    except lf.CaptureError as error:
        row.status, row.capture, row.reason = "capture-failed", "failed", _first_line(error)
        return
    row.transform_s = round(time.perf_counter() - start, 2)
    report = gm.libragrad_report
    row.capture = report.capture
    row.notes = " | ".join(([row.notes] if row.notes else []) + report.notes)
    row.rewrites = report.rewrites
    row.unclassified = len(report.unclassified)
    row.unclassified_ops = "; ".join(sorted({f"{u.op} ({u.reason})" for u in report.unclassified}))

    with torch.no_grad():
        expected, got = model(x), gm(x)
    row.forward_exact = bool(torch.equal(expected, got))
    row.forward_max_diff = float((expected - got).abs().max()) if expected.shape == got.shape else float("inf")

    incomplete = lf.node_completeness(gm, x).violations
    reported = {u.node for u in report.unclassified}
    row.local_incomplete = len(incomplete)
    row.local_nodes = _nodes_text(incomplete)
    row.silent = sum(1 for c in incomplete if c.node not in reported)
    row.fullgrad_f32 = float(lf.completeness(gm, x, TARGET, method="fullgrad").rel_error.max())
    try:
        row.fullgrad = float(lf.completeness(in_float64(gm), x.double(), TARGET, method="fullgrad").rel_error.max())
    except Exception as error:  # a graph holding float32 tensors that .double() does not reach
        row.fullgrad = row.fullgrad_f32
        row.notes += f" | FullGrad in float32 (no float64 copy: {_first_line(error)[:120]})"

    zero_additive_constants(model, gm)
    # in float64: the identity, free of float32 rounding (which differs between AVX2 and AVX512 kernels)
    try:
        row.ixg_bias_free = ixg_error(in_float64(gm), x.double())
        row.ixg_vanilla = ixg_error(copy.deepcopy(model).double(), x.double())
    except Exception as error:  # a graph holding float32 tensors that .double() does not reach
        row.ixg_bias_free, row.ixg_vanilla = ixg_error(gm, x), ixg_error(model, x)
        row.notes += f" | IxG in float32 (no float64 copy: {_first_line(error)[:120]})"
    if row.ixg_bias_free < TOLERANCE:
        row.ixg_status = "pass"
    elif incomplete:
        row.ixg_status = "fail"
    else:
        # every op is locally complete: what is left are additive constants that are not named
        # parameters (a computed positional encoding, a literal, f(0) of an identity rule): FullGrad
        # finds them in the graph; say where they are
        result = FullGrad(gm).decompose(x, TARGET)
        scale = float(result.output.abs().max())
        left = [name for name, share in result.biases.items() if float(share.abs().max()) > 1e-6 * scale]
        row.ixg_status = ("n/a: additive constants that are not parameters at " + ", ".join(left[:4])
                          + (f" (+{len(left) - 4})" if len(left) > 4 else "")) if left else "fail"
    _verdict(row)


def _verdict(row: Row) -> None:
    problems = []
    if not row.forward_exact:
        problems.append(f"forward differs by {row.forward_max_diff:.3g}")
    if row.local_incomplete:
        problems.append(f"{row.local_incomplete} locally incomplete node(s): {row.local_nodes}")
    if row.fullgrad is not None and row.fullgrad >= TOLERANCE:
        problems.append(f"FullGrad completeness {row.fullgrad:.2e}")
    if row.ixg_status == "fail":
        problems.append(f"bias-free IxG completeness {row.ixg_bias_free:.2e}")
    row.status = "fail" if problems else "pass"
    row.reason = "; ".join(problems)


COLUMNS = [f.name for f in Row.__dataclass_fields__.values()]


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            data = asdict(row)
            data["rewrites"] = json.dumps(row.rewrites, sort_keys=True)
            writer.writerow(data)


def read_csv(path: Path) -> list[Row]:
    """The rows a previous run wrote (to re-run a few families into it: ``--rerun``)."""
    rows = []
    with path.open(newline="") as handle:
        for data in csv.DictReader(handle):
            row = Row(data["family"], data["model"])
            for name, value in data.items():
                default = getattr(Row(data["family"], data["model"]), name)
                kind = Row.__dataclass_fields__[name].type
                if name == "rewrites":
                    setattr(row, name, json.loads(value or "{}"))
                elif value == "":
                    setattr(row, name, None if "None" in str(kind) else default)
                elif "bool" in str(kind):
                    setattr(row, name, value == "True")
                elif "int" in str(kind):
                    setattr(row, name, int(value))
                elif "float" in str(kind):
                    setattr(row, name, float(value))
                else:
                    setattr(row, name, value)
            rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1e}"
    return str(value)


def summary(rows: list[Row], command: str) -> str:
    captured = [r for r in rows if r.capture and r.capture != "failed"]
    passed = [r for r in captured if r.status == "pass"]
    silent = [r for r in captured if r.silent]
    by_capture: dict[str, int] = {}
    for r in rows:
        by_capture[r.capture or r.status] = by_capture.get(r.capture or r.status, 0) + 1
    ixg = [r for r in captured if r.ixg_status == "pass"]
    ixg_na = [r for r in captured if r.ixg_status.startswith("n/a")]
    share = 100.0 * len(passed) / max(len(captured), 1)
    lines = [
        "# timm sweep: libragrad-fx on architectures nobody wrote a rule for",
        "",
        f"Command: `{command}` (torch {torch.__version__}, timm {_timm_version()}, CPU, batch {BATCH}, "
        "random weights with timm's zero-initialised tensors re-drawn).",
        "",
        f"- families run: {len(rows)}; captured: {len(captured)} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(by_capture.items()))})",
        f"- **pass** (forward bit-identical, every op locally complete, FullGrad completeness < 1e-4, "
        f"bias-free IxG < 1e-4 where applicable): **{len(passed)}/{len(captured)} = {share:.1f}%** of captured families",
        f"- FullGrad completeness < 1e-4 in float64: {sum(1 for r in captured if r.fullgrad is not None and r.fullgrad < TOLERANCE)}"
        f"/{len(captured)}; in float32: {sum(1 for r in captured if r.fullgrad_f32 is not None and r.fullgrad_f32 < TOLERANCE)}"
        f"/{len(captured)} (float32 sums round at about 1e-4 of their largest terms on the bigger models)",
        f"- bias-free IxG completeness < 1e-4: {len(ixg)}/{len(captured)}; n/a (additive constants that are not "
        f"parameters): {len(ixg_na)}",
        f"- families with an input-dependent nonlinear op neither rewritten nor reported (silent): {len(silent)}",
        "",
        "Local completeness is checked op by op (`libragrad_fx.node_completeness`): an op where "
        "y != J~x + b under the rewritten backward is where completeness breaks. *Silent* counts such ops "
        "that the report does not list as unclassified.",
        "",
    ]
    failures = [r for r in rows if r.status != "pass"]
    if failures:
        lines += ["## Failures", "", "| family | model | status | reason |", "|---|---|---|---|"]
        lines += [f"| {r.family} | {r.model} | {r.status} | {r.reason.replace('|', '/')} |" for r in failures]
        lines.append("")
    lines += ["## All families", "",
              "| family | model | img | capture | fwd exact | local incomplete (silent) | IxG bias-free | IxG vanilla "
              "| FullGrad f64 (f32) | rewrites | unclassified | transform s | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rewrites = ", ".join(f"{k[:4]} {v}" for k, v in sorted(r.rewrites.items())) or "none"
        ixg = _fmt(r.ixg_bias_free) + (" (n/a)" if r.ixg_status.startswith("n/a") else "")
        local = "-" if r.local_incomplete is None else f"{r.local_incomplete} ({r.silent})"
        lines.append(f"| {r.family} | {r.model} | {r.img or '-'} | {r.capture or '-'} | {_fmt(r.forward_exact)} | "
                     f"{local} | {ixg} | {_fmt(r.ixg_vanilla)} | {_fmt(r.fullgrad)} ({_fmt(r.fullgrad_f32)}) | {rewrites} | "
                     f"{_fmt(r.unclassified)} | {_fmt(r.transform_s)} | {r.status} |")
    by_family = {r.family: r for r in rows}
    named = [(label, [by_family[f] for f in families if f in by_family]) for label, families in NAMED_FAMILIES.items()]
    named = [(label, found) for label, found in named if found]
    if named:
        lines += ["", "## The named families (each tests a general rule)", "", "| family | models | status | rewrites | note |",
                  "|---|---|---|---|---|"]
        for label, found in named:
            status = "pass" if all(r.status == "pass" for r in found) else "; ".join(
                f"{r.model}: {r.reason or r.status}" for r in found if r.status != "pass")
            rewrites = "; ".join(", ".join(f"{k} {v}" for k, v in sorted(r.rewrites.items())) or "none" for r in found)
            notes = "; ".join(n for r in found for n in r.notes.split(" | ") if "LSTM" in n or "inlined" in n
                              or "built with" in n)[:200]
            lines.append(f"| {label} | {', '.join(r.model for r in found)} | {status} | {rewrites} | {notes} |")
    unclassified = [r for r in rows if r.unclassified]
    if unclassified:
        lines += ["", "## Unclassified ops (reported, gradient left vanilla)", ""]
        lines += [f"- {r.family} ({r.model}): {r.unclassified_ops}" for r in unclassified]
    return "\n".join(lines) + "\n"


def _timm_version() -> str:
    import timm

    return timm.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every family (about an hour on 2 cores)")
    which.add_argument("--subset", choices=["ci"], help="the CI subset")
    which.add_argument("--models", help="comma-separated family names (see FAMILIES)")
    which.add_argument("--rerun", help="comma-separated families to run again into the existing --out results")
    parser.add_argument("--out", default=str(ROOT / "docs" / "sweep"), help="output folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per family")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.all:
        families = list(FAMILIES)
    elif args.subset:
        families = list(CI_SUBSET)
    else:
        families = [f.strip() for f in (args.models or args.rerun).split(",") if f.strip()]
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python tools/sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[Row] = []
    if args.rerun:
        rows = read_csv(out / "sweep.csv")
        previous = (out / "SUMMARY.md").read_text().split("Command: ", 1)[1].split(" (torch", 1)[0]
        command = previous.strip("`") + f"` then `{command}"
    for family in families:
        start = time.perf_counter()
        row = run_family(family, timeout=args.timeout)
        index = next((i for i, r in enumerate(rows) if r.family == family), None)
        if index is None:
            rows.append(row)
        else:
            rows[index] = row
        print(f"{family:28s} {row.model:36s} {row.capture or '-':15s} {row.status:14s} "
              f"{time.perf_counter() - start:6.1f}s  {row.reason[:150]}", flush=True)
        write_csv(rows, out / "sweep.csv")
        (out / "SUMMARY.md").write_text(summary(rows, command))
    return 0 if all(r.status == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
