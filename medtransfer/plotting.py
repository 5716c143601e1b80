"""What every figure shares: its file formats, saving it whole, and text that fits it.

``report``, ``tsne``, ``similarity``, ``gradcam`` and ``lr-find`` build their figures on
``matplotlib.figure.Figure`` (the Agg canvas, no pyplot) and save them here: PNG at
:data:`PNG_DPI`, or PDF / SVG (vector, for a paper) under ``--format``. Labels come from
run ids and paths that can be long; :func:`wrap` breaks them into lines that fit a width
in inches, so that nothing is cut at the canvas edge.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from medtransfer.errors import look_up_option

FIGURE_FORMATS = ("png", "pdf", "svg")
PNG_DPI = 200
# The mean advance of a DejaVu Sans character (matplotlib's default font), in ems, with
# a margin: most lower-case letters are 0.5-0.63 em wide, digits 0.64.
_CHARACTER_EM = 0.58


def check_format(figure_format: str) -> str:
    """``figure_format`` if it is one of :data:`FIGURE_FORMATS`, else a clear error."""
    return look_up_option(str(figure_format).lower(), FIGURE_FORMATS, "figure format",
                          see="PNG is a picture at 200 dpi; PDF and SVG are vector figures "
                              "for a paper.")


def save_figure(figure, path: str | Path) -> Path:
    """Writes ``figure`` whole or not at all, in the format its suffix names (PNG at
    :data:`PNG_DPI`); creates the folder. Returns ``path``.

    Raises:
        MedtransferError: the suffix is not one of :data:`FIGURE_FORMATS`.
    """
    path = Path(path)
    figure_format = check_format(path.suffix.lstrip("."))
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    try:
        figure.savefig(staged, format=figure_format, dpi=PNG_DPI)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return path


def characters_in(inches: float, fontsize: float) -> int:
    """How many characters of ``fontsize`` points fit in ``inches``, at least 8."""
    return max(8, int(inches / text_inches(1, fontsize)))


def text_inches(characters: int, fontsize: float) -> float:
    """About how wide ``characters`` characters of ``fontsize`` points are, in inches."""
    return characters * fontsize * _CHARACTER_EM / 72


def wrap(text: str, inches: float, fontsize: float, max_lines: int | None = None) -> str:
    """``text`` on lines that fit ``inches`` at ``fontsize`` points, breaking long words
    (run ids) where they must; each input line is wrapped on its own.

    Args:
        text: the label.
        inches: the width available.
        fontsize: its size in points.
        max_lines: keep at most this many lines, the last ending in an ellipsis.
    """
    width = characters_in(inches, fontsize)
    lines = [wrapped for line in str(text).splitlines()
             for wrapped in (textwrap.wrap(line, width, break_on_hyphens=True) or [""])]
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:width - 1] + "…"
    return "\n".join(lines)
