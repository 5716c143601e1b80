"""``build_report(experiment_dir) -> Report``: an experiment's runs as the study's tables.

Reads every run directory through ``training.rundir.scan_experiment`` (never the files
themselves) and writes ``results.csv``, ``summary.md`` and figures (PNG, PDF or SVG).

Definitions (also in the README and docs/design.md):

- A *cell* is (dataset, net, init, freeze); its runs differ only in seed. Runs of one
  dataset whose configs differ in anything else that changes what is learned (a class
  subset, the epochs, the training-set size, ...) are different tasks: the dataset label
  then names what differs, e.g. ``digits (classes=5,6,7,8,9)``, computed per dataset
  across nets so that one task is one row for every net.
- Every init other than ``glorot`` (imagenet, mean_var, a transfer from a run) is
  compared with ``glorot``. The pair is: the init at freeze 0 (every layer fine-tuned,
  the study's setting) against glorot at freeze 0, same task and net.
- Improvement of A over glorot: ``(AUC_A - AUC_B) / AUC_B`` with test micro AUCs of the
  best checkpoints (the mean over seeds when there are several); per dataset, the mean
  over the nets that have both; overall, the mean of the per-dataset values.
- Speed-up: ``e_B / e_A``, ``e_B`` the first epoch of glorot's best validation AUC,
  ``e_A`` the first epoch at which A's validation AUC reaches it ("never reached" when
  it does not); per seed shared by both, then mean ± std; per dataset, the mean over
  nets of each net's mean.
- Paired bootstrap: every run of a non-glorot init (at any freeze) against the glorot
  run at freeze 0 of the same task, net and seed, on the same test images; per task and
  net, the mean difference over seeds with a two-level (seeds x test images) bootstrap.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medtransfer.errors import MedtransferError
from medtransfer.fileio import read_json, write_json_atomic, write_text_atomic
from medtransfer.plotting import check_format, save_figure
from medtransfer.study import figures
from medtransfer.study.checks import ExpectationChecks
from medtransfer.study.costs import cost_columns, cost_section
from medtransfer.study.estimate import recorded_estimates
from medtransfer.study.labels import GLOROT, status_text
from medtransfer.study.panels import FigurePanels
from medtransfer.study.published import PublishedValues
from medtransfer.study.resampling import Bootstrap
from medtransfer.study.stats import LEVEL
from medtransfer.study.tables import DIFFERENCE_LEGEND, StudyTables
from medtransfer.training.rundir import primary_metric, scan_experiment

MIN_RESAMPLES = 1000
FIGURE_DIGESTS = ".figures.json"
"""In the report folder: a digest of each figure's data, to redraw only what changed."""


@dataclass
class Report:
    """What ``build_report`` wrote.

    Attributes:
        out_dir: the report folder.
        results: results.csv.
        summary: summary.md.
        figures: the figure files (PNG, PDF or SVG).
        main_text: the main table with its legend, the config's expectation and the
            improvement table: what ``medtransfer report`` prints.
        skipped: broken or inconsistent run directories and why.
    """

    out_dir: Path
    results: Path
    summary: Path
    figures: list[Path]
    main_text: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_study(experiment_dir: str | Path, *, resamples: int = MIN_RESAMPLES,
               seed: int = 0) -> Study:
    """Reads an experiment's runs (and its sweep.yaml, when present) for tables and figures.

    Args:
        experiment_dir: ``<logdir>/<experiment>``.
        resamples: bootstrap resamples, at least 1000.
        seed: seeds the bootstrap; the same seed gives the same numbers.

    Raises:
        MedtransferError: not an experiment folder, no run in it, or too few resamples.
    """
    experiment_dir = Path(experiment_dir).expanduser()
    if resamples < MIN_RESAMPLES:
        raise MedtransferError(
            f"--resamples {resamples} is too few for a 95% percentile interval. Use at "
            f"least {MIN_RESAMPLES} (the default)."
        )
    records = scan_experiment(experiment_dir)
    if not records:
        raise MedtransferError(_no_runs_message(experiment_dir))
    sweep, sweep_note = _read_sweep(experiment_dir / "sweep.yaml")
    return Study(experiment_dir, records, sweep, Bootstrap(resamples, seed), sweep_note)


def build_report(experiment_dir: str | Path, out: str | Path | None = None, *,
                 resamples: int = MIN_RESAMPLES, seed: int = 0,
                 figure_format: str = "png") -> Report:
    """Reads every run of an experiment and writes its tables, statistics and figures.

    Args:
        experiment_dir: ``<logdir>/<experiment>``.
        out: the report folder (default ``<experiment_dir>/report``).
        resamples: bootstrap resamples, at least 1000.
        seed: seeds the bootstrap; the same seed gives the same numbers.
        figure_format: ``png`` (200 dpi), ``pdf`` or ``svg``.

    Returns:
        Where the files went and the main table.

    Raises:
        MedtransferError: not an experiment folder, no run in it, too few resamples, or
            an output folder that cannot be written.
    """
    figure_format = check_format(figure_format)
    study = load_study(experiment_dir, resamples=resamples, seed=seed)
    out_dir = Path(out).expanduser() if out else study.experiment_dir / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MedtransferError(
            f"Cannot create the report folder '{out_dir}' ({error.strerror}). Choose "
            "another with --out."
        ) from None
    summary_text, main_text = study.summary(figure_format)
    results = out_dir / "results.csv"
    summary = out_dir / "summary.md"
    write_text_atomic(results, study.results_csv())
    write_text_atomic(summary, summary_text)
    written = _draw_figures(study.figure_specs(), out_dir, figure_format)
    return Report(out_dir, results, summary, written, main_text, study.skipped)


def _draw_figures(specs: list[tuple[str, Callable, tuple]], out_dir: Path,
                  figure_format: str) -> list[Path]:
    """Draws each figure, unless the report folder holds it drawn from the same data by
    the same figures module (:data:`FIGURE_DIGESTS`): drawing is most of a repeated report."""
    digests_path = out_dir / FIGURE_DIGESTS
    try:
        drawn = read_json(digests_path)
        drawn = drawn if isinstance(drawn, dict) else {}
    except (OSError, ValueError):
        drawn = {}
    module = hashlib.sha256(Path(figures.__file__).read_bytes()).hexdigest()
    paths = []
    for name, draw, arguments in specs:
        path = out_dir / Path(name).with_suffix(f".{figure_format}")
        digest = hashlib.sha256(repr((module, draw.__qualname__, arguments)).encode()).hexdigest()
        if not (path.exists() and drawn.get(path.name) == digest):
            save_figure(draw(*arguments), path)
            drawn[path.name] = digest
        paths.append(path)
    write_json_atomic(digests_path, drawn)
    return paths


def _no_runs_message(experiment_dir: Path) -> str:
    """Why an experiment folder gives no report: a run directory passed instead, only
    failed runs (each with its error.txt's first line), or no run at all."""
    from medtransfer.training.rundir import RunDirectory

    if RunDirectory(experiment_dir).config.exists():
        return (f"'{experiment_dir}' is a run directory, not an experiment. Pass the folder "
                f"that holds it: {experiment_dir.parent}.")
    failed = [RunDirectory(child) for child in sorted(experiment_dir.iterdir())
              if RunDirectory(child).error.is_file()]
    if failed:
        listing = "".join(
            f"- {run.path.name}: {run.error.read_text(errors='replace').partition(chr(10))[0]}\n"
            for run in failed)
        return (f"'{experiment_dir}' holds no run to report: its {len(failed)} run"
                f"{'s' if len(failed) != 1 else ''} failed before training:\n{listing}Each "
                "error.txt holds the exit code, the options and the last lines of the run's "
                "output. Fix the cause and run the sweep again.")
    experiments = sorted(child.name for child in experiment_dir.iterdir()
                         if child.is_dir() and scan_experiment(child))
    hint = (f" It holds experiments ({', '.join(experiments)}): pass one of them, for "
            f"example {experiment_dir / experiments[0]}." if experiments else "")
    return (f"No run directories in '{experiment_dir}'.{hint} A report reads "
            "<logdir>/<experiment>, the folder that 'medtransfer run --experiment NAME' "
            "or 'medtransfer sweep' fills.")


def _read_sweep(path: Path) -> tuple[dict[str, Any], str]:
    """The sweep config copied beside the runs; ({}, why) when absent or unreadable."""
    if not path.exists():
        return {}, ""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        return {}, f"{path.name} could not be read ({' '.join(str(error).split())})"
    if not isinstance(data, dict):
        return {}, f"{path.name} does not hold a mapping"
    return data, ""


class Study(StudyTables, ExpectationChecks, PublishedValues, FigurePanels):
    """The runs of one experiment on the study's axes, and every table and figure built
    from them (see :func:`load_study`)."""

    def summary(self, figure_format: str = "png") -> tuple[str, str]:
        """summary.md's text, and the part the CLI prints."""
        counts = defaultdict(int)
        for record in self.records:
            counts[status_text(record, detail=False)] += 1
        expectation = self.expectation()
        beside = self.published_values_table()
        if beside:
            source = self.published.get("source", "the published study")
            expectation = [*expectation, "", f"Published ({source}) beside ours:", "", beside]
        main = [self.main_table(), "", self.legend(), *expectation]
        for init in self.transfer_inits:
            table, _ = self.dataset_summary(init)
            main += ["", f"{self.init_labels[init]} over glorot (freeze 0):", "", table,
                     "", self.per_net_table(init)]
        if self.transfer_inits:
            main += ["", DIFFERENCE_LEGEND]
        out = [
            f"# Report: {self.experiment_dir.name}",
            "",
            f"{len(self.records)} run director{'y' if len(self.records) == 1 else 'ies'} in "
            f"`{self.experiment_dir}`: "
            + ", ".join(f"{count} {word}" for word, count in sorted(counts.items())) + ".",
        ]
        if self.sweep_note:
            out += ["", f"Note: {self.sweep_note}; tables use the runs alone."]
        out += ["", "## Test AUC at freeze 0", "", *main[:3], *expectation]
        findings_table = self.finding_table()
        if findings_table:
            out += ["", "## Per finding (multi-label runs)", "",
                    f"Each finding's test ROC AUC (unknown labels left out) with its "
                    f"{LEVEL:.0%} percentile interval over the test images (the mean AUC's "
                    "resamples), and its accuracy at probability 0.5.", "", findings_table]
        for init in self.freeze_inits:
            out += self._init_sections(init)
        findings = self.published.get("findings") if self.published else None
        if self.published:
            source = self.published.get("source", "the published study")
            out += ["", "## Published", "", f"Published values are from {source}."]
            if isinstance(findings, list):
                out += ["", "Its findings:", "", *(f"- {item}" for item in findings)]
        unfinished = [record for record in self.records
                      if record.status not in ("complete", "broken")]
        if unfinished:
            out += ["", "## Not complete", "",
                    *(f"- `{record.path.name}`: {status_text(record)}"
                      for record in unfinished)]
        out += cost_section(self.records, recorded_estimates(self.experiment_dir))
        if self.skipped:
            out += ["", "## Skipped (broken or inconsistent run directories)", "",
                    *(f"- `{path.name}`: {problem}" for path, problem in self.skipped)]
        figure_names = [Path(name).with_suffix(f".{figure_format}").name
                        for name, *_ in self.figure_specs()]
        if figure_names:
            out += ["", "## Figures", "", *(f"- [{name}]({name})" for name in figure_names),
                    "", "Error bars of the freeze and training-set size figures: the "
                    "bootstrap interval for one seed, ± the sample standard deviation over "
                    "seeds for several."]
        return "\n".join(out) + "\n", "\n".join(main) + "\n"

    def _init_sections(self, init: str) -> list[str]:
        """summary.md's sections of one init: its test AUC per freeze level, and for a
        transfer init its comparison with glorot and the paired bootstrap."""
        label = self.init_labels[init]
        out = ["", f"## {label}: test AUC per freeze level", "", self.freeze_table(init)]
        if init == GLOROT:
            return out
        out += [
            "", f"## {label} over glorot", "",
            "Both at freeze 0 (every layer fine-tuned), same dataset and net. "
            "Improvement: (AUC_A − AUC_glorot) / AUC_glorot of the mean test micro AUCs; "
            "per dataset, the mean over nets; overall, the mean over datasets. Speed-up: "
            "e_glorot / e_A, e_glorot the first epoch of glorot's best validation AUC and "
            "e_A the first epoch at which A's validation AUC reaches it, per seed run by "
            "both (epochs count warm-up and fine-tuning). " + DIFFERENCE_LEGEND,
            "", self.dataset_summary(init)[0], "", self.per_net_table(init),
        ]
        paired = self.paired_table(init)
        if paired:
            out += [
                "", f"### Paired bootstrap: {label} against glorot (freeze 0, same seed)", "",
                f"Δ AUC = AUC_A − AUC_glorot on the same test images; {LEVEL:.0%} "
                "percentile interval and p-value from the same resampled image indices "
                "for both runs (p: share of resamples on the other side of zero, "
                "doubled, capped at 1).",
                "", paired,
            ]
        return out

    def results_csv(self) -> str:
        """results.csv: a row per run directory, every metrics.json key, the interval."""
        rows = []
        estimates = recorded_estimates(self.experiment_dir)
        for record in self.records:
            row: dict[str, Any] = {"run_dir": str(record.path),
                                   "status": status_text(record, detail=False)}
            if record.config is not None:
                row.update({key: getattr(record.config, key)
                            for key in ("dataset", "net", "init", "freeze", "seed")})
            for key, value in record.metrics.items():
                if isinstance(value, dict) and key.endswith("_per_finding"):
                    # A multi-label run's per-finding values: a column per finding.
                    row.update({f"{key.removesuffix('_per_finding')}_{finding}": number
                                for finding, number in value.items()})
                elif key != "status":
                    row[key] = value
            row.update(cost_columns(record, estimates))
            row["epochs_done"] = record.epochs_done
            run = next((run for run in self.runs if run.record is record), None)
            interval = self.bootstrap.interval(run) if run and run.complete else None
            # The interval of the run's primary metric: a multi-label run's mean AUC.
            primary = primary_metric(record.metrics)
            row[f"test_{primary}_ci_low"] = interval.low if interval else ""
            row[f"test_{primary}_ci_high"] = interval.high if interval else ""
            row["problem"] = record.problem or self.problems.get(record.path, "")
            rows.append(row)
        intervals = [f"test_{primary}_ci_{end}" for primary in ("auc_micro", "auc_mean")
                     for end in ("low", "high")
                     if primary == "auc_micro" or any(f"test_{primary}_ci_{end}" in row
                                                      for row in rows)]
        last = ["epochs_done", *intervals, "problem"]
        columns = [key for key in dict.fromkeys(key for row in rows for key in row)
                   if key not in last] + last
        stream = io.StringIO()
        writer = csv.DictWriter(stream, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return stream.getvalue()
