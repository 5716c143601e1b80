"""Progress shown where the user looks: a live bar in a notebook, lines in a terminal or log.

``prepare``, a run's epochs and a sweep's runs each print their own progress lines on a
terminal or into a log file. In Jupyter those lines pile up in the cell's output, so there
each becomes one live ``tqdm`` bar instead (the notebook widget when ipywidgets is
installed, a text bar otherwise).
"""

from __future__ import annotations

import sys


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell), not a terminal."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def notebook_bar(total: int, description: str, unit: str):
    """A live ``tqdm.auto`` bar in a notebook; None elsewhere (print lines instead).

    Args:
        total: steps to do.
        description: shown before the bar, e.g. ``prepare cancer``.
        unit: what a step is (``image``, ``epoch``, ``run``).
    """
    if not in_notebook():
        return None
    try:  # the widget, where Jupyter can draw it; else a text bar, without tqdm's warning
        import ipywidgets  # noqa: F401
        from tqdm.notebook import tqdm
    except ImportError:
        from tqdm.std import tqdm
    return tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True)
