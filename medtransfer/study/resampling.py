"""Each run's bootstrap resamples of its test AUC, computed once and cached beside the run."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.fileio import read_json, write_json_atomic
from medtransfer.machine import usable_cores
from medtransfer.study.runs import StudyRun
from medtransfer.study.stats import (
    Difference,
    Interval,
    paired_mean_difference,
    percentile_interval,
    resample_counts,
    resampled_auc_mean,
    resampled_auc_micro,
    resampled_auc_per_finding,
)
from medtransfer.training.metrics import auc_micro

CACHE_NAME = "bootstrap_{resamples}x_seed{seed}.json"
"""Each run's resampled test AUCs, beside its predictions_test.csv (see ``Bootstrap``)."""


class Bootstrap:
    """Resampled AUCs per run, computed once; runs on the same test split share resamples.

    Each run's resampled AUCs are cached beside it (:data:`CACHE_NAME`), keyed by its
    predictions file's size and modification time, the resample count and the seed: a
    report run again while a sweep goes on recomputes only the new runs.
    """

    def __init__(self, resamples: int, seed: int):
        self.resamples, self.seed = resamples, seed
        self._counts: dict[str, np.ndarray] = {}
        self._counts_lock = threading.Lock()
        self._runs: dict[Path, tuple | str] = {}

    def prepare(self, runs: list[StudyRun]) -> None:
        """Computes (or reads from the cache) every run's resamples, on every core."""
        missing = [run for run in runs if run.record.path not in self._runs]
        with ThreadPoolExecutor(max(1, min(usable_cores(), len(missing)))) as pool:
            found = list(pool.map(self._compute, missing))
        for run, (result, fresh) in zip(missing, found, strict=True):
            self._runs[run.record.path] = result
            if fresh and not isinstance(result, str):
                self._write_cache(run, result)

    def resamples_of(self, run: StudyRun) -> tuple | str:
        """(split digest, AUC from the predictions, resampled AUCs), or why there are none."""
        if run.record.path not in self._runs:
            self.prepare([run])
        return self._runs[run.record.path]

    def _cache_path(self, run: StudyRun) -> Path:
        return run.record.path / CACHE_NAME.format(resamples=self.resamples, seed=self.seed)

    def _file_key(self, run: StudyRun) -> list[int] | None:
        try:
            status = run.record.directory.predictions.stat()
        except OSError:
            return None
        return [status.st_size, status.st_mtime_ns]

    def _compute(self, run: StudyRun) -> tuple[tuple | str, bool]:
        """(split digest, AUC from the predictions, resampled AUCs) or why not; and
        whether it was computed now (False: read from the cache)."""
        file_key = self._file_key(run)
        try:
            cached = read_json(self._cache_path(run))
            if cached.get("predictions") == file_key and file_key is not None:
                return (cached["split"], float(cached["auc"]),
                        np.asarray(cached["samples"], dtype=np.float64)), False
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass
        try:
            predictions = run.record.predictions
        except MedtransferError:
            return "no readable predictions_test.csv", True
        # One finding (a sigmoid) is a whole multi-label task; one class is not.
        if (predictions.probabilities.shape[1] < (1 if predictions.multi_label else 2)
                or not predictions.ids):
            return "predictions_test.csv has fewer than two classes or no image", True
        # One canonical image order, so that two runs on the same split line up.
        order = np.argsort(np.asarray(predictions.ids, dtype=object), kind="stable")
        labels = predictions.labels[order]
        probabilities = predictions.probabilities[order]
        digest = hashlib.sha256()
        digest.update("\n".join(predictions.ids[i] for i in order).encode())
        digest.update(labels.astype(np.int64).tobytes())
        split = digest.hexdigest()
        # A multi-label run's AUC is the mean of its findings' AUCs (its primary metric).
        resampled = resampled_auc_mean if predictions.multi_label else resampled_auc_micro
        samples = resampled(labels, probabilities, self._split_counts(split, labels))
        once = np.ones((1, len(labels)), dtype=np.int32)
        auc = (float(resampled_auc_mean(labels, probabilities, once)[0])
               if predictions.multi_label else auc_micro(labels, probabilities))
        return (split, auc, samples), True

    def _split_counts(self, split: str, labels: np.ndarray) -> np.ndarray:
        with self._counts_lock:
            if split not in self._counts:
                self._counts[split] = resample_counts(labels, self.resamples, self.seed)
            return self._counts[split]

    def _write_cache(self, run: StudyRun, result: tuple) -> None:
        file_key = self._file_key(run)
        if file_key is None:
            return
        split, auc, samples = result
        try:
            write_json_atomic(self._cache_path(run), {
                "predictions": file_key, "resamples": self.resamples, "seed": self.seed,
                "split": split, "auc": auc, "samples": samples.tolist()})
        except OSError:
            pass  # a read-only run directory: the report recomputes next time

    def interval(self, run: StudyRun) -> Interval | None:
        """The percentile interval of the run's test AUC; None without predictions."""
        found = self.resamples_of(run)
        if isinstance(found, str):
            return None
        return percentile_interval(run.auc, found[2])

    def finding_intervals(self, run: StudyRun) -> dict[str, Interval] | None:
        """A multi-label run's per-finding test AUCs with their percentile intervals (the
        resamples of its mean AUC, finding by finding; not cached); None for a
        single-label run or one without predictions. A finding without an AUC is left out."""
        try:
            predictions = run.record.predictions
        except MedtransferError:
            return None
        if not predictions.multi_label:
            return None
        order = np.argsort(np.asarray(predictions.ids, dtype=object), kind="stable")
        labels, probabilities = predictions.labels[order], predictions.probabilities[order]
        counts = resample_counts(labels, self.resamples, self.seed)
        once = np.ones((1, len(labels)), dtype=np.int32)
        estimates = resampled_auc_per_finding(labels, probabilities, once)[:, 0]
        samples = resampled_auc_per_finding(labels, probabilities, counts)
        return {name: percentile_interval(float(estimate), finding_samples)
                for name, estimate, finding_samples
                in zip(predictions.class_names, estimates, samples, strict=True)
                if not np.isnan(estimate)}

    def difference(self, pairs: list[tuple[StudyRun, StudyRun]]) -> Difference | str:
        """Paired bootstrap of the mean over seeds of ``AUC_A - AUC_B`` (one pair of runs
        per seed; see :func:`stats.paired_mean_difference`), or why it cannot be computed."""
        found = [(self.resamples_of(run_a), self.resamples_of(run_b)) for run_a, run_b in pairs]
        for pair in found:
            for item in pair:
                if isinstance(item, str):
                    return item
        if len({item[0] for pair in found for item in pair}) > 1:
            return "different test splits"
        return paired_mean_difference(
            np.array([a[1] for a, _ in found]), np.array([b[1] for _, b in found]),
            np.stack([a[2] for a, _ in found]), np.stack([b[2] for _, b in found]),
            seed=self.seed)
