"""Figures and the results table: one row per figure, the machine they were measured on.

A :class:`Figure` holds the two measured values, their ratio, and the target the ratio
(or, for start-up, the value itself) must meet; :func:`write_results` writes
``benchmarks/results.md``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from medtransfer.fileio import write_json_atomic, write_text_atomic
from medtransfer.machine import usable_cores


@dataclass(frozen=True)
class Target:
    """What a figure must reach.

    Attributes:
        at_least: the ratio must be at least this (higher is better), or
        at_most: the compared quantity must be at most this (lower is better).
        on_value: the bound applies to medtransfer's value instead of the ratio.
    """

    at_least: float | None = None
    at_most: float | None = None
    on_value: bool = False

    def __str__(self) -> str:
        bound = f">= {self.at_least:g}" if self.at_least is not None else f"<= {self.at_most:g}"
        return bound + (" (value)" if self.on_value else "")


@dataclass(frozen=True)
class Figure:
    """One row of the results table.

    Attributes:
        key: a stable identifier (tests look rows up by it).
        name: what is compared, with the sizes it was measured at.
        value: medtransfer's number.
        baseline: the number it is compared with, measured in the same run.
        unit: the unit of ``value`` and ``baseline``.
        target: what the figure must reach; None for numbers reported for the record.
    """

    key: str
    name: str
    value: float
    baseline: float
    unit: str
    target: Target | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.nan

    @property
    def compared(self) -> float:
        return self.value if self.target is not None and self.target.on_value else self.ratio

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.target.at_least is not None:
            return self.compared >= self.target.at_least
        return self.compared <= self.target.at_most

    def verdict(self) -> str:
        """``met``, ``missed by N%`` (how far the figure is from its target), or ``-``."""
        if self.met is None:
            return "-"
        if self.met:
            return "met"
        bound = self.target.at_least if self.target.at_least is not None else self.target.at_most
        short = abs(self.compared - bound) / bound
        return f"missed by {short:.1%}" if short < 0.01 else f"missed by {short:.0%}"


@dataclass
class Results:
    """Every figure of one benchmark run, with notes on how each was measured."""

    quick: bool
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)

    durations: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, what: str):
        """Says on stderr what starts and how long it took, and keeps the time for the
        results' notes: the full run takes a while."""
        print(f"[benchmarks] {what} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        yield
        self.durations[what] = time.perf_counter() - start
        print(f"[benchmarks] {what}: {self.durations[what]:.0f} s", file=sys.stderr, flush=True)

    def add(self, figures: list[Figure], notes: list[str] = ()) -> None:
        self.figures.extend(figures)
        self.notes.extend(notes)
        for figure in figures:
            print(format_row(figure), flush=True)


def format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_row(figure: Figure) -> str:
    return (
        f"| {figure.name} | {format_number(figure.value)} | {format_number(figure.baseline)} "
        f"| {figure.unit} | {format_number(figure.ratio)} | {figure.target or '-'} "
        f"| {figure.verdict()} |"
    )


def machine_lines() -> list[str]:
    """Machine, CPU count, GPU, versions and date, one Markdown list item each."""
    import keras
    import tensorflow as tf

    import medtransfer

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return [
        f"- machine: {platform.platform()}, {cpu}",
        f"- CPUs: {os.cpu_count()} (usable by this process: {usable_cores()})",
        f"- GPU: {', '.join(gpus) if gpus else 'none'}",
        f"- python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, medtransfer {medtransfer.__version__}",
        f"- date: {datetime.now(UTC).astimezone().isoformat(timespec='seconds')}",
    ]


def write_results(results: Results, path: Path) -> None:
    """Writes the results table and its notes as Markdown to ``path``, and every figure
    as JSON beside it (``results.json``) for tools and tests."""
    load_after = os.getloadavg()
    mode = "quick (tiny sizes: checks that every figure is produced, numbers mean little)" \
        if results.quick else "full"
    lines = [
        "# Benchmark results",
        "",
        "Written by `make benchmark` (`python -m benchmarks`); every ratio compares two "
        "things measured in the same run, taking turns, best of several repetitions.",
        "",
        *machine_lines(),
        f"- mode: {mode}",
        f"- load average (1 min) before / after: {results.load_before[0]:.2f} / "
        f"{load_after[0]:.2f}",
        f"- command: `{' '.join(['python -m benchmarks', *sys.argv[1:]])}`",
        "- time taken: " + ", ".join(f"{what} {seconds:.0f} s"
                                     for what, seconds in results.durations.items()),
        "",
        "| figure | medtransfer | baseline | unit | ratio | target | met? |",
        "|---|---:|---:|---|---:|---|---|",
        *(format_row(figure) for figure in results.figures),
        "",
        "## How each figure is measured",
        "",
        *(f"- {note}" for note in results.notes),
        "",
    ]
    write_text_atomic(path, "\n".join(lines))
    write_json_atomic(path.with_suffix(".json"), {
        "quick": results.quick,
        "figures": [
            {"key": f.key, "name": f.name, "value": f.value, "baseline": f.baseline,
             "unit": f.unit, "ratio": f.ratio, "target": str(f.target) if f.target else None,
             "met": f.met}
            for f in results.figures
        ],
    })
