"""Figure 6: how fast ``medtransfer --help``, ``medtransfer list`` and every subcommand's
``--help`` answer.

Each command runs in a fresh process, taking turns with a bare ``python -c pass``, best
of 3 (``--quick``: 1); the target (under 1 second) is on the command's own time. The
subcommands' ``--help`` make one row: the slowest of them, named.
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.report import Figure, Target
from benchmarks.timing import best_rates
from medtransfer.cli import build_parser

REPEATS = {False: 3, True: 1}
COMMANDS = {"help": ["--help"], "list": ["list"]}


def measure(quick: bool) -> tuple[list[Figure], list[str]]:
    def seconds_per_run(arguments: list[str]):
        # best_rates keeps the highest rate: runs per second, the inverse of the time.
        def run() -> float:
            start = time.perf_counter()
            subprocess.run([sys.executable, *arguments], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return 1 / (time.perf_counter() - start)
        return run

    sides = {name: seconds_per_run(["-m", "medtransfer", *arguments])
             for name, arguments in COMMANDS.items()}
    subcommands = sorted(build_parser().commands())
    sides.update({f"sub_{name}": seconds_per_run(["-m", "medtransfer", name, "--help"])
                  for name in subcommands})
    sides["python"] = seconds_per_run(["-c", "pass"])
    rates = best_rates(sides, REPEATS[quick])
    figures = [
        Figure(f"startup_{name}", f"start-up: medtransfer {' '.join(arguments)} vs python -c pass",
               1 / rates[name], 1 / rates["python"], "s", Target(at_most=1.0, on_value=True))
        for name, arguments in COMMANDS.items()
    ]
    slowest = min(subcommands, key=lambda name: rates[f"sub_{name}"])
    figures.append(Figure(
        "startup_subcommand_help",
        f"start-up: slowest of the {len(subcommands)} 'medtransfer SUBCOMMAND --help' "
        f"({slowest}) vs python -c pass",
        1 / rates[f"sub_{slowest}"], 1 / rates["python"], "s", Target(at_most=1.0, on_value=True)))
    notes = [f"Start-up: each command in a fresh process, taking turns, best of {REPEATS[quick]}; "
             f"the subcommands timed are {', '.join(subcommands)}."]
    return figures, notes
