"""``published: values:`` beside the measured: each number a paper reports for one
(dataset, net, init), next to the same metric of our runs.

A published value names the ``metrics.json`` key that measures what the paper reports
(for example MedMNIST's AUC is the positive class's AUC of a binary task, our
``test_auc_macro``), so the comparison is like with like; the sweep file says which
(``grid.check_published`` checks its structure before any run).
"""

from __future__ import annotations

from typing import Any

from medtransfer.study.labels import MISSING, freeze_label, markdown_table, mean_std
from medtransfer.study.runs import meets


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class PublishedValues:
    """The sweep file's ``published.values`` beside our runs (a mixin of
    :class:`medtransfer.study.report.Study`)."""

    def published_values(self) -> list[dict[str, Any]]:
        """The sweep file's published values (empty without them)."""
        values = self.published.get("values") if self.published else None
        return [entry for entry in values if isinstance(entry, dict)] if isinstance(
            values, list) else []

    def published_values_table(self) -> str:
        """A row per published value and task: the published number, the mean of our
        complete runs of that dataset, net, init and freeze (± sd over seeds), and the
        difference; ``—`` where no run has finished yet."""
        rows = []
        for entry in self.published_values():
            init = self.resolve_init(str(entry.get("init", "glorot")))
            freeze = float(entry.get("freeze", 0.0))
            metric = str(entry["metric"])
            label = f"{entry['label']} ({metric})" if entry.get("label") else metric
            published = float(entry["value"])
            found: dict[str, list[float]] = {}
            for run in self.runs:
                if (run.complete and run.dataset == entry["dataset"]
                        and run.net == entry["net"] and run.init == init
                        and run.freeze == freeze
                        and meets(run.record.config, entry.get("where") or {})):
                    value = run.record.metrics.get(metric)
                    found.setdefault(run.task, [])
                    if _number(value):
                        found[run.task].append(float(value))
            where = f"{entry['net']} · {self._label(init)}" + (
                f" · freeze {freeze_label(freeze)}" if freeze else "")
            if not found:
                rows.append([str(entry["dataset"]), where, label, f"{published:.3f}",
                             MISSING, MISSING])
            for task, values in found.items():
                if not values:
                    rows.append([task, where, label, f"{published:.3f}",
                                 f"not in metrics.json ({metric})", MISSING])
                    continue
                mean, std = mean_std(values)
                ours = f"{mean:.3f}" if len(values) == 1 else (
                    f"{mean:.3f} ± {std:.3f} (n={len(values)})")
                rows.append([task, where, label, f"{published:.3f}", ours,
                             f"{mean - published:+.3f}"])
        if not rows:
            return ""
        return markdown_table(rows, ["dataset", "net · init", "metric", "published", "ours",
                                     "ours − published"])
