"""Put two ``libragrad-fx bench --pixel-rule dissent`` runs side by side: each method with and without
dissent suppression, pixel-level scores and deletion with the models' 8x8 patches and with finer ones.

    python tools/dissent_table.py docs/bench/dissent/patch8 docs/bench/dissent/patch4

Prints one markdown table per model; each DS row shows its change against the row without DS.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

COLUMNS = (("seg_ap", "AP ↑", "coarse"), ("pointing", "Point ↑", "coarse"), ("disc_share", "Disc ↑", "coarse"),
           ("prob_srg", "SRG 8x8 ↑", "coarse"), ("prob_srg", "SRG {p}x{p} ↑", "fine"),
           ("prob_mif", "MIF {p}x{p} ↓", "fine"), ("prob_lif", "LIF {p}x{p} ↑", "fine"),
           ("compl_rel_median", "Compl. err ↓", "coarse"))


def _rows(folder: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(folder / "results.csv") as f:
        return {(r["model"], r["method"], r["variant"]): r for r in csv.DictReader(f)}


def _cell(value: str, base: str | None, key: str) -> str:
    if value in ("", "nan"):
        return "n/a"
    v = float(value)
    if key == "compl_rel_median":
        return f"{v:.1e}"
    text = f"{v:.3f}"
    if base not in (None, "", "nan"):
        d = v - float(base)
        text += f" ({d:+.3f})" if abs(d) >= 5e-4 else " (=)"
    return text


def table(coarse: Path, fine: Path) -> str:
    rows = {"coarse": _rows(coarse), "fine": _rows(fine)}
    patch = json.loads((fine / "run.json").read_text())["config"]["patch"]
    models = list(dict.fromkeys(k[0] for k in rows["coarse"]))
    out = []
    for model in models:
        out.append(f"### {model}\n")
        out.append("| method | backward | " + " | ".join(h.format(p=patch) for _, h, _ in COLUMNS) + " |")
        out.append("|---|---|" + "---:|" * len(COLUMNS))
        for (m, method, variant), _ in rows["coarse"].items():
            if m != model:
                continue
            base = variant.partition("+")[0] if "+" in variant else None
            cells = []
            for key, _, run in COLUMNS:
                row = rows[run].get((model, method, variant), {})
                ref = rows[run].get((model, method, base), {}).get(key) if base else None
                cells.append(_cell(row.get(key, ""), ref, key))
            out.append(f"| {method} | {variant} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("coarse", type=Path, help="a bench folder measured with the models' patch size (8)")
    ap.add_argument("fine", type=Path, help="the same run with a finer --patch")
    args = ap.parse_args(argv)
    print(table(args.coarse, args.fine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
