"""The compiled inner loop of :func:`medtransfer.study.stats.resampled_auc_micro`.

Imported only when resamples are computed (a report whose runs are all cached never
loads numba). ``nogil``: the report computes several runs at once in threads.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def weighted_aucs(counts: np.ndarray, positive_image: np.ndarray, negative_image: np.ndarray,
                  below: np.ndarray, up_to: np.ndarray, out: np.ndarray) -> None:
    """``out[b]``: the weighted AUC of resample ``b`` (see ``resampled_auc_micro``).

    The positives come in score order, so the negatives below (and tied with) each one
    are counted by two pointers that only move forward: one pass per resample, in whole
    numbers (exact).
    """
    for resample in range(counts.shape[0]):
        weights = counts[resample]
        strictly, tied_or_below = 0, 0  # negative weight below the pointers
        low, high = 0, 0
        twice_wins, positives = 0, 0
        for k in range(positive_image.shape[0]):
            while low < below[k]:
                strictly += weights[negative_image[low]]
                low += 1
            while high < up_to[k]:
                tied_or_below += weights[negative_image[high]]
                high += 1
            weight = weights[positive_image[k]]
            twice_wins += weight * (strictly + tied_or_below)
            positives += weight
        while high < negative_image.shape[0]:
            tied_or_below += weights[negative_image[high]]
            high += 1
        out[resample] = (twice_wins / 2) / (float(positives) * float(tied_or_below))
