"""``python -m benchmarks --quick --only cost``: the cost figure's rows (tests/test_benchmarks.py
checks the other figures; this module of its own runs beside it)."""

import pytest
from test_benchmarks import COST, EXPECTED_COST, check_quick_benchmark


@pytest.mark.slow
def test_quick_cost_figure_writes_a_finite_row_per_run(tmp_path):
    check_quick_benchmark(tmp_path, [COST], EXPECTED_COST)
