"""``python -m benchmarks [--quick] [--out FILE] [--only FIGURE ...]``: every figure."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import tempfile
from pathlib import Path

FIGURES = ("startup", "pipeline", "training", "freezing", "tracing", "prepare", "report", "chest",
           "cost")
# The photographs of the pipeline figure, also prepared for the training and memory runs:
# (count, width, height). Quick: the fewest that split 8:1:1 with >= 10 images per class.
PHOTOS = {False: (2000, 500, 375), True: (20, 64, 48)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (about a CPU-minute): checks every figure is produced")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.md",
                        help="where to write the table (default benchmarks/results.md)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=FIGURES,
                        help="run only these figures")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    # TensorFlow comes with these: imported here, not at the top (see the package docstring).
    from benchmarks.report import Results, write_results

    results = Results(args.quick, load_before=os.getloadavg())
    with (tempfile.TemporaryDirectory(prefix="medtransfer-benchmark-") as tmp,
          concurrent.futures.ThreadPoolExecutor(1) as background):
        root = Path(tmp)
        photos = None
        if {"pipeline", "training", "prepare"} & set(args.only):
            from benchmarks.photos import prepare_photos
            count, width, height = PHOTOS[args.quick]
            with results.timed(f"writing and preparing {count} photographs"):
                photos = prepare_photos(root, count, width, height)
        memory = None
        if args.quick and "prepare" in args.only:
            # The memory figure's three commands run in processes of their own; --quick
            # starts them now, beside the other figures, whose numbers mean little there.
            from benchmarks import prepare_scaling
            source = prepare_scaling.write_source(root, args.quick)
            memory = background.submit(prepare_scaling.measure_memory, root, photos, source,
                                       args.quick).result
        for figure in FIGURES:
            if figure in args.only:
                with results.timed(figure):
                    results.add(*_measure(figure, root, photos, args.quick, memory))
    write_results(results, args.out)
    print(f"wrote {args.out}")
    return 0


def _measure(figure: str, root: Path, photos, quick: bool, memory):
    """One figure's rows and notes (each module imported only when its figure runs)."""
    if figure == "startup":
        from benchmarks import startup
        return startup.measure(quick)
    if figure == "pipeline":
        from benchmarks import input_pipeline
        return input_pipeline.measure(photos, quick)
    if figure == "training":
        from benchmarks import training_ceiling
        return training_ceiling.measure(photos, root / "runs", quick)
    if figure == "freezing":
        from benchmarks import freezing
        return freezing.measure(quick)
    if figure == "tracing":
        from benchmarks import tracing
        return tracing.measure(quick)
    if figure == "report":
        from benchmarks import report_speed
        return report_speed.measure(root, quick)
    if figure == "chest":
        from benchmarks import prepare_chest
        return prepare_chest.measure(root, quick)
    if figure == "cost":
        from benchmarks import sweep_cost
        return sweep_cost.measure(root, quick)
    from benchmarks import prepare_scaling
    return prepare_scaling.measure(root, photos, quick, memory)


if __name__ == "__main__":
    raise SystemExit(main())
