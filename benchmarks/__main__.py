"""``python -m benchmarks [--quick] [--out FILE] [--only FIGURE ...]``: every figure."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

FIGURES = ("startup", "pipeline", "training", "freezing", "prepare")
# The photographs of the pipeline figure, also prepared for the training and memory runs.
PHOTOS = {False: 2000, True: 100}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a few minutes on 2 cores): checks every figure runs")
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
        if "startup" in args.only:
            from benchmarks import startup
            results.add(*startup.measure(args.quick))
        photos = None
        if {"pipeline", "training", "prepare"} & set(args.only):
            from benchmarks.photos import prepare_photos
            photos = prepare_photos(root, PHOTOS[args.quick])
        if "pipeline" in args.only:
            from benchmarks import input_pipeline
            results.add(*input_pipeline.measure(photos, args.quick))
        if "training" in args.only:
            from benchmarks import training_ceiling
            results.add(*training_ceiling.measure(photos, root / "runs", args.quick))
        if "freezing" in args.only:
            from benchmarks import freezing
            results.add(*freezing.measure(args.quick))
        if "prepare" in args.only:
            from benchmarks import prepare_scaling
            results.add(*prepare_scaling.measure(root, photos, args.quick))
    write_results(results, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
