"""``expect:`` checked: each structured check of a sweep file against the measured numbers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.config import absolute_path
from medtransfer.errors import MedtransferError
from medtransfer.study.grid import PRETRAIN_REFERENCE, RUN_REFERENCE, check_expect
from medtransfer.study.labels import NAMED_INITS, freeze_label, label_value
from medtransfer.study.runs import StudyRun, meets, reference_init


def _where_text(filters: dict[str, Any]) -> str:
    return "".join(f", {key}={label_value(value)}" for key, value in filters.items())


def _seeds(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


class ExpectationChecks:
    """The sweep file's ``expect``: its text, and a verdict per structured check (a mixin
    of :class:`medtransfer.study.report.Study`)."""

    def expectation(self) -> list[str]:
        """The sweep file's ``expect``: its text, and each check's verdict."""
        expect = self.sweep.get("expect")
        if isinstance(expect, str):
            return ["", f"Expected (not checked): {expect.strip()}"] if expect.strip() else []
        if not isinstance(expect, dict):
            return []
        try:
            check_expect(expect, "sweep.yaml")
        except MedtransferError as error:
            return ["", f"Expected: not checked: {error}"]
        out = []
        if str(expect.get("text") or "").strip():
            out += ["", f"Expected (sweep.yaml): {str(expect['text']).strip()}"]
        checks = expect.get("checks") or []
        if checks:
            out += ["", "Checks of sweep.yaml's expect:", "",
                    *(f"- {self._verdict(check)}" for check in checks)]
        return out

    def _verdict(self, check: dict[str, Any]) -> str:
        freeze = float(check.get("freeze", 0.0))
        filters = check.get("where") or {}
        if "improvement" in check:
            init_a, init_b = self.resolve_init(check["improvement"]), self.resolve_init(
                check["over"])
            what = (f"{self._label(init_a)} (freeze {freeze_label(freeze)}) over "
                    f"{self._label(init_b)} (freeze 0){_where_text(filters)}: "
                    f"{check['sign']} difference"
                    + (", interval excludes 0" if check.get("excludes_zero") else ""))
            runs_a = self._selected(init_a, freeze, filters)
            runs_b = {(run.task, run.net, run.seed): run
                      for run in self._selected(init_b, 0.0, filters)}
            groups = defaultdict(list)
            for run in runs_a:
                partner = runs_b.get((run.task, run.net, run.seed))
                if partner is not None:
                    groups[(run.task, run.net)].append((run, partner))
            if not groups:
                missing = (f"{self._label(init_a)} at freeze {freeze_label(freeze)}"
                           if not runs_a else f"{self._label(init_b)} at freeze 0"
                           if not runs_b else f"{self._label(init_b)} at freeze 0 with the "
                           f"seed of a run of {self._label(init_a)}")
                return f"{what}: not checked: no run matches {missing}{_where_text(filters)}"
            results = [self._improvement_verdict(check, task, net, pairs)
                       for (task, net), pairs in groups.items()]
        else:
            init = self.resolve_init(check["init"])
            low, high = (float(bound) for bound in check["range"])
            metric = check["metric"]
            what = (f"{metric} of {self._label(init)} (freeze {freeze_label(freeze)})"
                    f"{_where_text(filters)} in [{low:g}, {high:g}]")
            groups = defaultdict(list)
            for run in self._selected(init, freeze, filters):
                value = run.record.metrics.get(metric)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    groups[(run.task, run.net)].append(float(value))
            if not groups:
                return (f"{what}: not checked: no run matches {self._label(init)} at freeze "
                        f"{freeze_label(freeze)}{_where_text(filters)} with {metric} in its "
                        "metrics.json")
            results = []
            for (task, net), values in groups.items():
                mean = float(np.mean(values))
                results.append((low <= mean <= high,
                                f"{task} · {net}: mean {mean:.4f} over {_seeds(len(values))}"))
        if any(ok is None for ok, _ in results):
            why = next(text for ok, text in results if ok is None)
            return f"{what}: not checked: {why}"
        measured = "; ".join(text for _, text in results)
        if all(ok for ok, _ in results):
            return f"{what}: as expected ({measured})"
        return f"{what}: NOT as expected: {measured}"

    def _improvement_verdict(self, check: dict[str, Any], task: str, net: str,
                             pairs: list[tuple[StudyRun, StudyRun]]) -> tuple[bool | None, str]:
        found = self.bootstrap.difference(pairs)
        if isinstance(found, str):
            estimate = float(np.mean([a.auc - b.auc for a, b in pairs]))
            text = f"{task} · {net}: Δ AUC {estimate:+.4f} over {_seeds(len(pairs))}"
            if check.get("excludes_zero"):
                return None, f"no interval for {task} · {net} ({found})"
        else:
            estimate = found.estimate
            text = (f"{task} · {net}: Δ AUC {estimate:+.4f} [{found.low:+.4f}, "
                    f"{found.high:+.4f}] over {_seeds(len(pairs))}")
        ok = estimate > 0 if check["sign"] == "positive" else estimate < 0
        if check.get("excludes_zero") and not isinstance(found, str):
            ok = ok and (found.low > 0 or found.high < 0)
        return ok, text

    def resolve_init(self, name: str) -> str:
        """An init as the grid writes it (``glorot``, ``run:NAME``, ``pretrain:NAME``, a
        path) as the report groups runs by it."""
        if name in NAMED_INITS:
            return name
        if name.startswith(RUN_REFERENCE):
            return reference_init(name, self.sources, self.records)
        if name.startswith(PRETRAIN_REFERENCE):
            return self._pretraining_init(name)
        return absolute_path(name)

    def _pretraining_init(self, name: str) -> str:
        """``pretrain:NAME`` as the report groups its runs (``runs.study_init``): the one
        init of the runs' that is a pretraining of the step's method; ``pretrain:NAME``
        itself (no runs) when there is none, or several steps of that method."""
        steps = self.sweep.get("pretrain")
        step = steps.get(name.removeprefix(PRETRAIN_REFERENCE)) if isinstance(steps, dict) \
            else None
        method = step.get("method") if isinstance(step, dict) else None
        found = {run.init for run in self.runs if Path(run.init).parent.name == method}
        return found.pop() if len(found) == 1 else name

    def _label(self, init: str) -> str:
        return self.init_labels.get(init) or (
            f"transfer from {init.removeprefix(RUN_REFERENCE)}"
            if init.startswith(RUN_REFERENCE) else init)

    def _selected(self, init: str, freeze: float, filters: dict[str, Any]) -> list[StudyRun]:
        return [run for run in self.runs if run.complete and run.init == init
                and run.freeze == freeze and meets(run.record.config, filters)]
