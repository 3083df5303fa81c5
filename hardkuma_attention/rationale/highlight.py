r"""Show rationales: an HTML page and terminal (ANSI) highlighting.

Gate values ``g`` in [0, 1] per token are rendered in three visibly different ways:

=============  ===============================================  ===========================
gate           HTML                                              terminal
=============  ===============================================  ===========================
``g == 1``     solid orange background, bold (class ``sel``)     bold black on yellow
``0 < g < 1``  orange background of opacity ``0.15 + 0.5 g``,    yellow underlined, with
               dashed underline, ``title`` shows ``g``           ``{token|0.42}`` when no colour
               (class ``part``)
``g == 0``     plain                                             plain
=============  ===============================================  ===========================

A human rationale (``gold``) is shown as a blue box-shadow underline in HTML.
Without colour, :func:`terminal_highlight` writes ``[token]`` for exact 1 and
``{token|0.42}`` for partial gates, so the output stays readable in logs and tests.
"""
from __future__ import annotations

import html
import os
import sys
from typing import Iterable, Mapping, Optional, Sequence

from .io import write_text

__all__ = ["terminal_highlight", "html_tokens", "html_page", "write_html"]

_BOLD_YELLOW = "\033[1;30;43m"
_UNDERLINE_YELLOW = "\033[4;33m"
_RESET = "\033[0m"


def _gate_kind(g: float) -> str:
    if g >= 1.0:
        return "one"
    if g > 0.0:
        return "partial"
    return "zero"


def terminal_highlight(tokens: Sequence[str], gates: Sequence[float], color: Optional[bool] = None) -> str:
    """One line with the rationale highlighted (``color=None``: colour when stdout is a tty)."""
    if len(tokens) != len(gates):
        raise ValueError(f"{len(tokens)} tokens vs {len(gates)} gates")
    if color is None:
        color = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
    out = []
    for tok, g in zip(tokens, gates):
        kind = _gate_kind(float(g))
        if kind == "one":
            out.append(f"{_BOLD_YELLOW}{tok}{_RESET}" if color else f"[{tok}]")
        elif kind == "partial":
            out.append(f"{_UNDERLINE_YELLOW}{tok}{_RESET}" if color else f"{{{tok}|{float(g):.2f}}}")
        else:
            out.append(tok)
    return " ".join(out)


def html_tokens(tokens: Sequence[str], gates: Sequence[float], gold: Optional[Sequence[bool]] = None) -> str:
    """``<span>`` markup for one text (see the module docstring for the classes)."""
    if len(tokens) != len(gates):
        raise ValueError(f"{len(tokens)} tokens vs {len(gates)} gates")
    parts = []
    for i, (tok, g) in enumerate(zip(tokens, gates)):
        g = float(g)
        kind = _gate_kind(g)
        classes = []
        style = ""
        if kind == "one":
            classes.append("sel")
        elif kind == "partial":
            classes.append("part")
            style = f' style="background: rgba(255,140,0,{0.15 + 0.5 * g:.3f})"'
        if gold is not None and gold[i]:
            classes.append("gold")
        cls = f' class="{" ".join(classes)}"' if classes else ""
        parts.append(f'<span{cls}{style} title="z={g:.3f}">{html.escape(tok)}</span>')
    return " ".join(parts)


_CSS = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.9; }
.ex { border-bottom: 1px solid #ccc; padding: .6em 0; }
.meta { color: #555; font-size: 90%; }
.sel { background: rgb(255,140,0); font-weight: bold; }
.part { border-bottom: 2px dashed rgb(200,90,0); }
.gold { box-shadow: inset 0 -3px 0 rgb(30,90,220); }
.legend span { margin-right: 1em; }
"""


def html_page(records: Iterable[Mapping], title: str = "Rationales") -> str:
    """A standalone HTML page.  Each record: ``tokens``, ``gates``, optional ``gold_rationale``,
    ``label``, ``prediction``, ``id``."""
    items = []
    for r in records:
        meta = (f"id {html.escape(str(r.get('id', '')))} &middot; gold {html.escape(str(r.get('label', '')))}"
                f" &middot; predicted {html.escape(str(r.get('prediction', '')))}")
        selected = sum(1 for g in r["gates"] if float(g) != 0)
        meta += f" &middot; selected {selected}/{len(r['gates'])}"
        body = html_tokens(r["tokens"], r["gates"], r.get("gold_rationale"))
        items.append(f'<div class="ex"><div class="meta">{meta}</div>{body}</div>')
    legend = ('<p class="legend"><span class="sel">z = 1</span><span class="part" '
              'style="background: rgba(255,140,0,.4)">0 &lt; z &lt; 1</span><span>z = 0</span>'
              '<span class="gold">human rationale</span></p>')
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{legend}\n"
            + "\n".join(items) + "\n</body></html>\n")


def write_html(path, records: Iterable[Mapping], title: str = "Rationales") -> None:
    """Write :func:`html_page` to ``path`` atomically (temp file then rename)."""
    write_text(path, html_page(records, title))
