"""What a grid cost: each run's wall time and training speed per phase, the
experiment's device-hours, beside ``sweep --estimate``'s numbers when one was made.

A run's wall time is metrics.json's ``wall_seconds`` (from the start of training to
metrics.json, earlier sessions of a resumed run counted by their epochs; runs written
before it existed fall back to ``epoch_seconds``). Its device-hours are that time the
devices it trained on: its replicas (GPUs under its strategy; 1 for the CPU). The
estimate is of the whole run from its process's start, so it includes starting Python and
TensorFlow, which the wall time leaves out (a few seconds).
"""

from __future__ import annotations

from typing import Any

from medtransfer.study.labels import markdown_table
from medtransfer.training.rundir import RunRecord


def wall_seconds(metrics: dict[str, Any]) -> float | None:
    """A complete run's wall time, or None when metrics.json has no time."""
    value = metrics.get("wall_seconds", metrics.get("epoch_seconds"))
    return float(value) if value is not None else None


def device_hours(metrics: dict[str, Any]) -> float | None:
    """Wall time times the devices the run trained on, in hours."""
    seconds = wall_seconds(metrics)
    return None if seconds is None else seconds * int(metrics.get("replicas") or 1) / 3600


def cost_columns(record: RunRecord, estimates: dict[str, float]) -> dict[str, Any]:
    """results.csv's cost columns of one run (its wall time and rates are metrics.json
    keys already): device_hours and, when an estimate was made, estimated_seconds."""
    hours = device_hours(record.metrics) if record.status == "complete" else None
    return {"device_hours": "" if hours is None else hours,
            "estimated_seconds": estimates.get(record.path.name, "")}


def cost_section(records: list[RunRecord], estimates: dict[str, float]) -> list[str]:
    """summary.md's "Cost" section: a row per complete run, then the experiment's total."""
    complete = [record for record in records if record.status == "complete"]
    if not complete:
        return []
    rows, total, estimated_total = [], 0.0, 0.0
    for record in complete:
        metrics = record.metrics
        hours = device_hours(metrics) or 0.0
        total += hours
        estimate = estimates.get(record.path.name)
        if estimate is not None:
            estimated_total += estimate * int(metrics.get("replicas") or 1) / 3600
        rows.append([f"`{record.path.name}`", clock(wall_seconds(metrics)),
                     _rate(metrics.get("images_per_second_warmup")),
                     _rate(metrics.get("images_per_second_finetune")),
                     f"{hours:.3f}", clock(estimate)])
    header = ["run", "wall time", "images/s phase 1", "images/s phase 2", "device-hours",
              "estimate"]
    lines = ["", "## Cost", "",
             "Wall time: from the start of training to metrics.json (resumed runs: every "
             "session's epochs). Images per second: training steps only, over every epoch of "
             "the phase. Device-hours: wall time times the run's devices (GPUs; 1 for the "
             "CPU). Estimate: the last `sweep --estimate` of the whole run, process start "
             "included.", "", markdown_table(rows, header), "",
             f"Total: {total:.3f} device-hours over {len(complete)} complete run"
             f"{'s' if len(complete) != 1 else ''}"]
    if estimates:
        lines[-1] += f" (estimated {estimated_total:.3f})"
    lines[-1] += "."
    return lines


def clock(seconds: float | None) -> str:
    """``h:mm:ss``; "–" for None."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _rate(value: Any) -> str:
    return "–" if value is None else f"{float(value):,.1f}"
