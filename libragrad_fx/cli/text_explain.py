"""`libragrad-fx explain hf:DIR --text "..."`: token scores in the terminal, as JSON, HTML and PNG.

The text branch of the ``explain`` command: :func:`libragrad_fx.text.prepare` reads the model's task and
target, each preset (``--compare``: vanilla, then ``--preset``) transforms the readout once, and
:mod:`libragrad_fx.text.render` draws the result.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..core.errors import UsageError
from .validate import output_file

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    from ..text import attribute, prepare
    from ..text.attribution import resolve_method
    from ..text.render import terminal, to_html, to_png
    from .specs import load_model

    if args.text is None:
        raise UsageError(f"{args.model} is a text model: explain it with --text \"...\"")
    if not args.model.startswith("hf:"):
        raise UsageError(f"--text needs a text model: MODEL must be hf:DIR (a saved Hugging Face directory), "
                         f"not {args.model}")
    if args.out is not None:
        output_file(args.out, suffix=".png")
    if args.html is not None:
        output_file(args.html, option="--html", suffix=".html")
    try:
        method = resolve_method(args.method or "fullgrad")
    except ValueError as error:
        raise UsageError(f"--method: {error} (for text)") from error
    if getattr(args, "pixel_rule", None):
        print(f"note: --pixel-rule {args.pixel_rule}: a text model reads token ids and no linear map or convolution "
              "reads them; nothing to rewrite, the explanation is the one without it", file=sys.stderr)
    loaded = load_model(args.model, checkpoint=args.checkpoint, model_kwargs=args.model_kwargs, seed=args.seed)
    prepared = prepare(loaded.text_model, None, args.text, pair=args.pair, target=args.target)
    presets = (["vanilla"] if args.compare and args.preset != "vanilla" else []) + [args.preset]
    results = [attribute(prepared, method=method, preset=p, seed=args.seed, text=args.text, pair=args.pair)
               for p in presets]
    if args.html:
        with open(args.html, "w") as f:
            f.write(to_html(results, title=f"{args.model}: {method}"))
    if args.out:
        to_png(results, args.out)
    if args.json:
        data = results[0].to_dict() if len(results) == 1 else {
            "model": args.model, "text": args.text, "pair": args.pair, "explanations": [r.to_dict() for r in results]}
        print(json.dumps(data, indent=2))
        return 0
    print(f"{args.model} ({prepared.task}): {len(prepared.tokens)} tokens")
    terminal(results)
    for path in (args.html, args.out):
        if path:
            print(f"wrote {path}")
    return 0
