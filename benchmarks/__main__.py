"""``python -m benchmarks [--quick] [--out FILE] [--only FIGURE ...]``: every figure."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

FIGURES = ("startup", "pipeline", "training", "freezing", "prepare")
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

    # Heavy imports here, not at the top: see the package docstring.
    from benchmarks.report import Results, write_results

    results = Results(args.quick, load_before=os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="medtransfer-benchmark-") as tmp:
        root = Path(tmp)
        photos = None
        if {"pipeline", "training", "prepare"} & set(args.only):
            from benchmarks.photos import prepare_photos
            count, width, height = PHOTOS[args.quick]
            with results.timed(f"writing and preparing {count} photographs"):
                photos = prepare_photos(root, count, width, height)
        for figure in FIGURES:
            if figure not in args.only:
                continue
            with results.timed(figure):
                if figure == "startup":
                    from benchmarks import startup
                    results.add(*startup.measure(args.quick))
                elif figure == "pipeline":
                    from benchmarks import input_pipeline
                    results.add(*input_pipeline.measure(photos, args.quick))
                elif figure == "training":
                    from benchmarks import training_ceiling
                    results.add(*training_ceiling.measure(photos, root / "runs", args.quick))
                elif figure == "freezing":
                    from benchmarks import freezing
                    results.add(*freezing.measure(args.quick))
                else:
                    from benchmarks import prepare_scaling
                    results.add(*prepare_scaling.measure(root, photos, args.quick))
    write_results(results, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
