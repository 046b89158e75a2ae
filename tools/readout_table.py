"""Put a ``libragrad-fx bench`` run that explains the logit beside one that explains the probability
(``--readout prob``, the reference implementation's default readout "S1"): each method's row from both, the
probability run's change against the logit run in brackets.

    python tools/readout_table.py docs/bench/readout/logit docs/bench/readout/prob

Prints one markdown table per model. Both runs must have the same settings but the readout.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

COLUMNS = (("prob_srg", "SRG ↑"), ("prob_mif", "MIF ↓"), ("prob_lif", "LIF ↑"), ("seg_ap", "AP ↑"),
           ("pointing", "Point ↑"), ("disc_share", "Disc ↑"))


def _rows(folder: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(folder / "results.csv") as f:
        return {(r["model"], r["method"], r["variant"]): r for r in csv.DictReader(f)}


def _settings(folder: Path) -> dict:
    config = json.loads((folder / "run.json").read_text())["config"]
    return {k: v for k, v in config.items() if k != "readout"}


def table(logit: Path, prob: Path) -> str:
    if _settings(logit) != _settings(prob):
        raise SystemExit(f"{logit} and {prob} differ in more than the readout: {_settings(logit)} vs {_settings(prob)}")
    a, b = _rows(logit), _rows(prob)
    out = []
    for model in dict.fromkeys(k[0] for k in a):
        out += [f"### {model}", "", "| method | backward | " + " | ".join(f"{label} logit | prob" for _, label in COLUMNS)
                + " |", "|---|---|" + "---:|---:|" * len(COLUMNS)]
        for key, row in a.items():
            if key[0] != model or key not in b:
                continue
            cells = []
            for column, _ in COLUMNS:
                x, y = row[column], b[key][column]
                if x in ("", "nan"):
                    cells += ["n/a", "n/a"]
                    continue
                d = float(y) - float(x)
                cells += [f"{float(x):.3f}", f"{float(y):.3f} ({d:+.3f})"]
            out.append(f"| {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logit", type=Path, help="a bench run with --readout logit")
    parser.add_argument("prob", type=Path, help="the same run with --readout prob")
    args = parser.parse_args()
    print(table(args.logit, args.prob))


if __name__ == "__main__":
    main()
