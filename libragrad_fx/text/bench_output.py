"""What ``libragrad-fx bench --text`` writes: ``results.csv``, ``results.md`` (the table, best values in bold),
``deletion.png`` (mean MIF / LIF curves), ``examples.html`` (a few sentences, every method's token scores, the
evidence underlined) and ``run.json`` (settings, timings, notes)."""
from __future__ import annotations

import csv
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .bench import Config, TextResult, config_dict

__all__ = ["COLUMNS", "TABLE", "markdown", "write"]

COLUMNS = ("model", "method", "variant", "key", "n", "prob_srg", "prob_mif", "prob_lif", "pred_srg", "pred_mif",
           "pred_lif", "ap", "pointing", "compl_rel_median", "ms_per_sentence")
TABLE = (("prob_srg", "SRG ↑", True), ("prob_mif", "MIF ↓", False), ("prob_lif", "LIF ↑", True),
         ("pred_srg", "SRG acc ↑", True), ("ap", "AP ↑", True), ("pointing", "Point ↑", True),
         ("compl_rel_median", "Compl. err ↓", False))


def _cell(value: float, column: str, best: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.1e}" if column == "compl_rel_median" else f"{value:.3f}"
    return f"**{text}**" if best else text


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| method | backward | " + " | ".join(h for _, h, _ in TABLE) + " |", "|---|---|" + "---:|" * len(TABLE)]
    best = {}
    for column, _, higher in TABLE:
        values = [abs(r[column]) if column == "compl_rel_median" else r[column] for r in rows
                  if not math.isnan(r[column])]
        best[column] = (max(values) if higher else min(values)) if values else None
    for r in rows:
        cells = [_cell(r[c], c, best[c] is not None and (abs(r[c]) if c == "compl_rel_median" else r[c]) == best[c])
                 for c, _, _ in TABLE]
        out.append(f"| {r['method']} | {'—' if r['variant'] == 'baseline' else r['variant']} | " + " | ".join(cells)
                   + " |")
    return "\n".join(out) + "\n"


def _preamble(config: Config, seed: int) -> str:
    return (f"Token attributions of the bundled text classifier (libragrad_fx/text/weights) on {config.n} generated "
            f"sentences (libragrad_fx.text.data, seed {seed}); the target is each sentence's label. SRG/MIF/LIF: "
            "areas under the target's softmax probability as words are replaced by [MASK], 10% of the words per "
            "step, most / least influential first (SRG acc: the same with 'still classified as the target'); AP: "
            "average precision of the token scores against the evidence tokens (the keyword, and its negator when "
            "negated); Point: the top-scored word is evidence; Compl. err: median |sum(scores) + rest - logit| / "
            "|logit| for the methods meant to add up. "
            f"IG: {config.ig_steps} Gauss-Legendre steps from zero embeddings; SmoothGrad: {config.sg_samples} "
            f"samples, noise {config.sg_stdev} of the embeddings' range; Gradient and SmoothGrad scores are the "
            "L2 norms of the gradient at each token.\n\n")


def _plot(result: TextResult, path: Path) -> None:
    from ..bench.figures import plot_curves

    plot_curves(result.curves, path, title="text classifier", xlabel="fraction of words replaced by [MASK]",
                ylabel="target probability (softmax)")


def _examples_html(result: TextResult) -> str:
    import html

    from .render import colour, display_token

    parts = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>text benchmark examples</title><style>"
             "body{font-family:sans-serif}td{padding:2px 6px}.tok{padding:1px 3px;font-family:monospace}"
             ".ev{text-decoration:underline;font-weight:bold}</style></head><body>"
             "<p>Each row: one method's token scores (red for the label, blue against; each row scaled to its "
             "largest score; hover for the number). Evidence tokens are underlined.</p>"]
    for ex in result.examples:
        parts.append(f"<h3>label {html.escape(ex['label'])}</h3><table>")
        for name, scores in ex["scores"].items():
            bound = max(abs(s) for s in scores) or 1.0
            cells = []
            for token, score, evidence in zip(ex["tokens"], scores, ex["evidence"]):
                r, g, b = colour(score, bound)
                cls = "tok ev" if evidence else "tok"
                cells.append(f'<span class="{cls}" style="background:rgb({r},{g},{b})" title="{score:+.4g}">'
                             f"{html.escape(display_token(token))}</span>")
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{' '.join(cells)}</td></tr>")
        parts.append("</table>")
    return "".join(parts) + "</body></html>\n"


def write(result: TextResult, config: Config, out: Path) -> list[Path]:
    """Write the outputs into ``out``; returns the paths written."""
    from .data import HELDOUT_SEED

    out.mkdir(parents=True, exist_ok=True)
    seed = HELDOUT_SEED if config.seed is None else config.seed
    files = [out / "results.csv", out / "results.md", out / "deletion.png", out / "examples.html", out / "run.json"]
    with open(files[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    files[1].write_text(_preamble(config, seed) + markdown(result.rows) + "\nNotes:\n\n"
                        + "".join(f"- {n}\n" for n in result.notes))
    _plot(result, files[2])
    files[3].write_text(_examples_html(result))
    info = {"config": config_dict(config), "seconds": round(result.seconds, 1), "torch": torch.__version__,
            "machine": platform.machine(), "threads": torch.get_num_threads(), "notes": result.notes,
            "date": time.strftime("%Y-%m-%d")}
    files[4].write_text(json.dumps(info, indent=2) + "\n")
    return files
