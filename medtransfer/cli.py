"""The ``medtransfer`` command: parses flags and calls one library function per subcommand.

Bad input ends in a one-paragraph message on stderr and exit code 2 (a diverged run:
3), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from medtransfer.config import BN_STATS, SCALINGS, STRATEGIES
from medtransfer.errors import MedtransferError

_FORMATTER = argparse.RawDescriptionHelpFormatter

RUN_EXAMPLES = """examples:
  medtransfer run --dataset digits --net small_cnn --epochs 1+4 --image-size 32
  medtransfer run --dataset cancer --net inception_v3 --init imagenet --freeze 0.5
  medtransfer run --dataset retina --net densenet121 --init mean_var --epochs 0+50
  medtransfer run --dataset cats_vs_dogs --net resnet50_v2 --init imagenet \\
      --strategy mirrored --mixed-precision --batch-size 64
  medtransfer run --config configs/demo.yaml --lr 0.001   # a YAML file, a flag wins over it
"""
REPRODUCE_EXAMPLES = """examples:
  medtransfer reproduce tensorboard_logs/default/cancer-inception_v3-imagenet-f0.50-s0
  cd /tmp && medtransfer reproduce ~/medtransfer/tensorboard_logs/demo/<run_id>
  medtransfer reproduce /shared/runs/study/cancer-mobilenet-imagenet-f0.50-s0 --overwrite
"""
PREPARE_EXAMPLES = """examples:
  medtransfer prepare cancer --source ~/kaggle/histopathologic-cancer-detection
  medtransfer prepare retina --source ~/kaggle/aptos2019-blindness-detection --max-size 512
  medtransfer prepare proteins --source ~/kaggle/human-protein-atlas-image-classification
  medtransfer prepare cats_vs_dogs --source ~/kaggle/dogs-vs-cats
  medtransfer prepare folder --source ~/my_images --out datasets/my_images
  medtransfer prepare medmnist --source ~/pneumoniamnist.npz --out datasets/pneumoniamnist
"""


def _run_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="train, evaluate and log one configuration",
        description="Train one configuration of the study (dataset, net, init, freeze, "
                    "W+E regime) and write its run directory under "
                    "<logdir>/<experiment>/<run_id>/.",
        epilog=RUN_EXAMPLES, formatter_class=_FORMATTER,
    )
    add = parser.add_argument
    add("--config", help="YAML file with run options (only what differs from the defaults); "
                         "flags given here win over it")
    add("--dataset", help="a registered dataset or a prepared folder's name (default digits)")
    add("--net", help="backbone, see 'medtransfer list' (default small_cnn)")
    add("--init", help="glorot, imagenet, mean_var, or a run directory / weights file "
                       "to transfer from (default glorot)")
    add("--freeze", type=float, help="fraction of the backbone's bottom layers frozen in "
                                     "phase 2, in [0, 1] (default 0)")
    add("--epochs", help="W+E: W warm-up epochs (backbone frozen), then E fine-tuning "
                         "(default 3+50)")
    add("--lr", type=float, help="Adam learning rate (default: the dataset's)")
    add("--batch-size", type=int, help="per-replica batch size (default 32)")
    add("--image-size", type=int, help="square input size (default: the net's)")
    add("--seed", type=int, help="seeds weights, shuffling and augmentation (default 0)")
    add("--train-size", type=int, help="train on a stratified subset of N training images")
    add("--scaling", choices=SCALINGS,
        help="unit: pixels in [0, 1] (default); native: the net's preprocess_input")
    add("--no-augment", dest="augment", action="store_const", const=False,
        help="no training augmentation at all")
    for name in ("flips", "noise", "color"):
        add(f"--{name}", dest=name, action=argparse.BooleanOptionalAction,
            help=f"switch the {name} augmentation (default: the dataset's)")
    add("--strategy", choices=STRATEGIES,
        help="auto: MirroredStrategy when more than one GPU is visible (default auto)")
    add("--mixed-precision", action="store_const", const=True,
        help="mixed_float16 compute, float32 output layer")
    add("--deterministic", action="store_const", const=True,
        help="deterministic TensorFlow ops: identical numbers for the same seed (slower)")
    add("--bn-stats", choices=BN_STATS,
        help="BatchNorm statistics for evaluation: precise (re-estimated over fixed "
             "training batches before each evaluation, default) or moving (Keras' "
             "moving averages)")
    add("--weights-file", help="local ImageNet weights file for imagenet / mean_var")
    add("--head-units", type=int, help="units of the head's hidden Dense layer (default 256)")
    add("--dropout", type=float, help="head dropout rate (default 0.5)")
    add("--cache-limit", help="largest decoded split kept in memory (default 4GiB)")
    add("--experiment", help="folder under --logdir grouping runs (default 'default')")
    add("--logdir", help="root of the run directories (default tensorboard_logs)")
    add("--data-dir", help="root of the prepared datasets (default datasets)")
    add("--overwrite", action="store_true",
        help="train afresh over the run directory's run (complete, killed, or of another "
             "configuration), deleting it")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medtransfer.config import RunConfig, config_from_mapping, load_config_file
    from medtransfer.training.run import run_experiment

    config = load_config_file(args.config) if args.config else RunConfig()
    given = {
        key: value for key, value in vars(args).items()
        if value is not None and key not in ("config", "overwrite", "handler", "command")
    }
    config = config_from_mapping(given, base=config, source="the command line")
    result = run_experiment(config, overwrite=args.overwrite)
    metrics = result.metrics
    if "test_auc_micro" in metrics:
        print(
            f"\ntest AUC (micro) {metrics['test_auc_micro']:.4f}, macro "
            f"{metrics['test_auc_macro']:.4f}, accuracy {metrics['test_accuracy']:.4f} "
            f"(best epoch {metrics['best_epoch']}, validation AUC "
            f"{metrics['val_auc_micro_best']:.4f})"
        )
    print(f"metrics:     {_shown(result.run_dir / 'metrics.json')}")
    print(f"TensorBoard: tensorboard --logdir {_shown(result.run_dir.parent)}")
    return 0


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when inside it (run directories are
    stored absolute so that their config works from anywhere, but read better short)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _reproduce_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="train a finished run's configuration again, beside it, and compare",
        description="Read RUN_DIR/config.yaml and train that configuration again into "
                    "<logdir>/<experiment>-repro/<run_id>/ (the original is never touched), "
                    "then print both runs' test metrics side by side. Works from any "
                    "directory: config.yaml holds absolute paths.",
        epilog=REPRODUCE_EXAMPLES, formatter_class=_FORMATTER,
    )
    parser.add_argument("run_dir", help="the run directory, <logdir>/<experiment>/<run_id>")
    parser.add_argument("--overwrite", action="store_true",
                        help="train the copy again from scratch (the original is never written)")
    parser.set_defaults(handler=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    from medtransfer.training.reproduce import reproduce_run

    print(reproduce_run(args.run_dir, overwrite=args.overwrite).comparison())
    return 0


def _prepare_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="decode, check and split a downloaded dataset once",
        description="Read a dataset in its downloaded layout, list every image that cannot "
                    "be used in rejected.csv, split it 8:1:1 (stratified, seeded) and store "
                    "it as shards with split.csv and manifest.json under --out.",
        epilog=PREPARE_EXAMPLES, formatter_class=_FORMATTER,
    )
    add = parser.add_argument
    add("dataset", help="the layout: a registered dataset, or folder / csv / medmnist for "
                        "your own images")
    add("--source", type=Path, help="the downloaded folder (csv: the CSV file; medmnist: "
                                    "the .npz file)")
    add("--out", type=Path, help="where to write it (default <data-dir>/<dataset>)")
    add("--data-dir", type=Path, default=Path("datasets"),
        help="root of the prepared datasets (default datasets)")
    add("--seed", type=int, default=0, help="seed of the split (default 0)")
    add("--max-reject", type=float, default=0.01,
        help="fail when more than this fraction of the images is rejected (default 0.01)")
    add("--max-size", type=int, default=512,
        help="downsize so the longer side is at most this many pixels (default 512)")
    add("--min-class-count", type=int, default=None,
        help="proteins: keep classes with at least this many single-label images")
    add("--workers", type=int, default=None, help="decoding processes (default: every core)")
    add("--force", action="store_true", help="prepare again even if already prepared")
    add("--no-progress", dest="progress", action="store_false",
        help="no progress lines (count, rate, ETA) on stderr")
    parser.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from medtransfer.data.prepare import prepare_dataset

    options = {"min_class_count": args.min_class_count} if args.min_class_count else {}
    result = prepare_dataset(
        args.dataset, args.source, args.out or args.data_dir / args.dataset,
        seed=args.seed, max_reject=args.max_reject, max_size=args.max_size,
        workers=args.workers, force=args.force, progress=args.progress, **options,
    )
    if not result.skipped:
        print(f"prepared {result.path}: "
              + ", ".join(f"{split} {sum(counts.values())}"
                          for split, counts in result.counts.items())
              + f"; {result.num_rejected} rejected (see {result.path / 'rejected.csv'})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from medtransfer.data.registry import DATASETS
    from medtransfer.models.init import INITS
    from medtransfer.models.registry import NETS

    print("nets:")
    print(f"  {'name':<14}{'input':>6}{'min':>6}  imagenet  description")
    for net in NETS:
        print(f"  {net.name:<14}{net.default_input_size:>6}{net.min_input_size:>6}  "
              f"{'yes' if net.imagenet else 'no':<8}  {net.description}")
    print("\ndatasets:")
    print(f"  {'name':<14}{'classes':>8}{'lr':>8}  {'prepared':<9} augmentation")
    for spec in DATASETS:
        prepared = (args.data_dir / spec.name / "manifest.json").exists()
        ready = "bundled" if not spec.needs_source else ("yes" if prepared else "no")
        classes = spec.num_classes if spec.num_classes else "-"
        augment = ", ".join(name for name in ("flips", "noise", "color")
                            if getattr(spec.augment, name)) or "none"
        print(f"  {spec.name:<14}{classes:>8}{spec.default_lr:>8g}  {ready:<9} {augment}")
        print(textwrap.fill(spec.description, width=88, initial_indent=" " * 6,
                            subsequent_indent=" " * 6))
    print("\ninits: " + ", ".join(INITS) + ", or a path to a run directory / weights file")
    print("defaults: --epochs 3+50, --freeze 0, --init glorot, --scaling unit, "
          "--batch-size 32")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtransfer",
        description="Does ImageNet transfer learning help on my medical images, with which "
                    "network, and how much should I freeze?",
        epilog="Run 'medtransfer <command> --help' for the options and examples of each.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command", required=True)
    listing = subparsers.add_parser(
        "list", help="nets, datasets and inits with their defaults",
        description="List the registered nets, datasets and inits with their defaults.",
        epilog="example:\n  medtransfer list", formatter_class=_FORMATTER)
    listing.add_argument("--data-dir", type=Path, default=Path("datasets"),
                         help="root of the prepared datasets (default datasets)")
    listing.set_defaults(handler=_list)
    _prepare_parser(subparsers)
    _run_parser(subparsers)
    _reproduce_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MedtransferError as error:
        print(f"medtransfer {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"medtransfer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
