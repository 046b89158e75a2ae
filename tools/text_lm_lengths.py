"""Language models at length: transform time and FullGrad completeness of five decoder families.

    nice -n 19 python tools/text_lm_lengths.py --length 512 --out docs/text/lm_lengths.md

Tiny random Llama, Qwen2, Mistral, Gemma and GPT-2 configurations (tests/text_models.py; 2 layers, hidden 64,
KV cache off), random token ids of ``--length``, the next-token logit of token 3 explained by FullGrad on the
LibraGrad backward, in float32 and bfloat16. Reported: the transform's wall time (capture with torch.export,
analysis, rewrite, forward check), one FullGrad pass, the relative completeness error |sum - f| / |f| and, for
bfloat16, the error in units of eps * S (S = the sum of the terms' magnitudes; tests/test_text_lms.py asks <= 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from text_models import LM_FAMILIES, LM_VOCAB, language_model  # noqa: E402

import libragrad_fx.text as lt  # noqa: E402


def measure(family: str, length: int, dtype: torch.dtype) -> dict:
    model = language_model(family).to(dtype)
    ids = torch.randint(0, LM_VOCAB, (1, length), generator=torch.Generator().manual_seed(0))
    embeds = model.get_input_embeddings()(ids).detach()
    start = time.perf_counter()
    scorer = lt.TokenScorer(lt.readouts.NextTokenLogits(model), embeds)
    transform_s = time.perf_counter() - start
    start = time.perf_counter()
    result = scorer.scores("fullgrad", embeds, None, torch.tensor([3]))
    fullgrad_s = time.perf_counter() - start
    error = float((result.scores.sum() + sum(result.rest.values(), 0) - result.value).abs())
    scale = float(result.scores.abs().sum() + sum(v.abs() for v in result.rest.values()) + result.value.abs())
    return {"family": family, "dtype": str(dtype).removeprefix("torch."), "transform_s": transform_s,
            "fullgrad_s": fullgrad_s, "value": float(result.value[0]), "rel": error / abs(float(result.value[0])),
            "eps_units": error / (torch.finfo(dtype).eps * scale), "rewrites": scorer.report.rewrites,
            "unclassified": len(scorer.report.unclassified)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--out", default="docs/text/lm_lengths.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for family in LM_FAMILIES:
        for dtype in (torch.float32, torch.bfloat16):
            rows.append(measure(family, args.length, dtype))
            print(rows[-1], flush=True)
    lines = [f"FullGrad on the LibraGrad backward, next-token logit, {args.length} tokens, tiny random configurations "
             "(2 layers, hidden 64), one thread; `python tools/text_lm_lengths.py`. Times are wall seconds on a "
             "shared 2-core machine under load (compare rows with each other, not with other machines).\n",
             "| family | dtype | transform s | FullGrad s | f | rel. error | error / (eps S) | rewrites | unclassified |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        rewrites = ", ".join(f"{k} {v}" for k, v in sorted(r["rewrites"].items()))
        lines.append(f"| {r['family']} | {r['dtype']} | {r['transform_s']:.1f} | {r['fullgrad_s']:.2f} | "
                     f"{r['value']:.4f} | {r['rel']:.1e} | {r['eps_units']:.3f} | {rewrites} | {r['unclassified']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
