"""Token attributions for people: coloured tokens in the terminal (rich), a self-contained HTML page, a PNG.

Every view shades a token by its score on a diverging scale (red: for the target, blue: against it; white:
zero), scaled per explanation by its largest magnitude, and prints the numbers beside: the readout's value,
the completeness error and the largest token scores, so the plain-text output says what the colours do.
"""
from __future__ import annotations

import html as html_lib
import os
from typing import Sequence

from .explain import TokenAttribution

__all__ = ["colour", "display_token", "summary", "terminal", "to_html", "to_png"]


def display_token(token: str) -> str:
    """A token as text: byte-level BPE's ``Ġ`` and SentencePiece's ``▁`` are the spaces they stand for."""
    return token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\\n") or token


def colour(score: float, bound: float) -> tuple[int, int, int]:
    """RGB of a score on the blue-white-red scale, +-``bound`` at full colour."""
    t = max(-1.0, min(1.0, score / bound)) if bound > 0 else 0.0
    fade = int(round(255 * (1 - abs(t))))
    return (255, fade, fade) if t >= 0 else (fade, fade, 255)


def _bound(a: TokenAttribution) -> float:
    return max((abs(s) for s in a.scores), default=0.0) or 1.0


def summary(a: TokenAttribution, top: int = 3) -> list[str]:
    """The numbers of one explanation as plain lines."""
    head = f"{a.preset:>9}  {a.method}: target {a.target}, value {a.value:.5g}"
    if a.completeness is not None:
        head += f", completeness error {a.completeness:.1e}"
    order = sorted(range(len(a.scores)), key=lambda i: -abs(a.scores[i]))[:top]
    lines = [head, "           top: " + ", ".join(f"{display_token(a.tokens[i]).strip()} [{i}] {a.scores[i]:+.3g}"
                                                  for i in order)]
    if a.rest:
        lines.append("           not on a token: " + ", ".join(f"{k} {v:+.3g}" for k, v in a.rest.items()))
    return lines


def terminal(attributions: Sequence[TokenAttribution], console=None) -> None:
    """Print each explanation: its numbers, then its tokens shaded by score."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console(highlight=False, soft_wrap=True)
    for a in attributions:
        lines = summary(a)
        console.print(lines[0])
        bound = _bound(a)
        text = Text("           ")
        for token, score in zip(a.tokens, a.scores):
            r, g, b = colour(score, bound)
            text.append(display_token(token).strip() or token, style=f"black on rgb({r},{g},{b})")
            text.append(" ")
        console.print(text)
        for line in lines[1:]:
            console.print(line)


def to_html(attributions: Sequence[TokenAttribution], title: str = "libragrad-fx token attributions") -> str:
    """A self-contained page: one panel per explanation, side by side; hovering a token shows its score."""
    panels = []
    for a in attributions:
        bound = _bound(a)
        spans = []
        for token, score in zip(a.tokens, a.scores):
            r, g, b = colour(score, bound)
            spans.append(f'<span class="tok" style="background:rgb({r},{g},{b})" title="{score:+.6g}">'
                         f"{html_lib.escape(display_token(token).strip() or token)}</span>")
        numbers = [f"target <b>{html_lib.escape(str(a.target))}</b>", f"value {a.value:.5g}"]
        if a.completeness is not None:
            numbers.append(f"completeness error {a.completeness:.1e}")
        rest = "".join(f"<li>{html_lib.escape(k)}: {v:+.4g}</li>" for k, v in a.rest.items())
        panels.append(
            f'<div class="panel"><h2>{html_lib.escape(a.preset)} {html_lib.escape(a.method)}</h2>'
            f'<p class="numbers">{", ".join(numbers)}</p><p class="tokens">{" ".join(spans)}</p>'
            + (f'<p class="numbers">not on a token:</p><ul>{rest}</ul>' if rest else "") + "</div>")
    style = ("body{font-family:sans-serif;margin:1.5em}.row{display:flex;gap:2em;flex-wrap:wrap}"
             ".panel{flex:1;min-width:20em}.tok{padding:2px 4px;margin:1px;border-radius:3px;line-height:2;"
             "font-family:monospace;color:#000}.numbers{color:#444;font-size:90%}h2{font-size:110%}")
    text = html_lib.escape(attributions[0].text) if attributions else ""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html_lib.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1 style=\"font-size:120%\">{html_lib.escape(title)}</h1>"
            f"<p>{text}</p><div class=\"row\">{''.join(panels)}</div>"
            "<p class=\"numbers\">red: for the target, blue: against it (each panel scaled to its largest score); "
            "hover a token for its score.</p></body></html>\n")


def to_png(attributions: Sequence[TokenAttribution], path: str | os.PathLike, dpi: int = 110) -> None:
    """One row per explanation: the tokens as shaded boxes, wrapped, with the numbers above."""
    from matplotlib.figure import Figure

    per_line = 12
    rows = [(a, [a.tokens[i:i + per_line] for i in range(0, len(a.tokens), per_line)]) for a in attributions]
    height = sum(0.45 * len(chunks) + 0.55 for _, chunks in rows) + 0.2
    figure = Figure(figsize=(11, height), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    axes.set_xlim(0, 1)
    axes.set_ylim(height, 0)
    y = 0.35
    for a, chunks in rows:
        title = f"{a.preset} {a.method}: target {a.target}, value {a.value:.4g}"
        if a.completeness is not None:
            title += f", completeness error {a.completeness:.1e}"
        axes.text(0.01, y, title, fontsize=9, va="center")
        y += 0.45
        bound = _bound(a)
        index = 0
        for chunk in chunks:
            for j, token in enumerate(chunk):
                r, g, b = colour(a.scores[index], bound)
                axes.text(0.01 + j / per_line * 0.98, y, display_token(token).strip() or token, fontsize=9,
                          va="center", family="monospace",
                          bbox={"facecolor": (r / 255, g / 255, b / 255), "edgecolor": "#999", "pad": 2})
                index += 1
            y += 0.45
        y += 0.1
    figure.savefig(os.fspath(path), format="png", dpi=dpi)
