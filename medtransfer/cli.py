"""The ``medtransfer`` command: parses flags and calls one library function per subcommand.

Bad input ends in a one-paragraph message on stderr and exit code 2 (a diverged run:
3), never a traceback. A mistyped flag or value gets the subcommand's one-line usage and
the same did-you-mean as a mistyped name. Nothing here imports TensorFlow: handlers
import the library lazily, so ``--help`` and ``list`` answer at once.

A subcommand is one ``_<name>_parser(subparsers)`` function, which sets ``handler`` (and
optionally ``interrupted``: what a Ctrl-C leaves behind), plus that handler.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from medtransfer.errors import MedtransferError, unknown_name_message
from medtransfer.options import (
    BN_STATS,
    CLASS_WEIGHTS,
    IMAGE_FORMATS,
    LR_SCHEDULES,
    OPTIMIZERS,
    SCALINGS,
    STRATEGIES,
)
from medtransfer.serve.export import FORMATS as EXPORT_FORMATS
from medtransfer.version import __version__

_FORMATTER = argparse.RawDescriptionHelpFormatter


class _Parser(argparse.ArgumentParser):
    """argparse with medtransfer's errors: one usage line, then one paragraph, exit 2.

    Subparsers are of this class too, so every subcommand gets it without asking.
    """

    def format_usage(self) -> str:
        # The full usage of 'run' is 14 lines; an error needs one. --help keeps the full one.
        positionals = [
            action.metavar or action.dest for action in self._actions
            if not action.option_strings and action.dest != argparse.SUPPRESS
            and not isinstance(action, argparse._SubParsersAction)
        ]
        command = " command ..." if self.commands() else ""
        return f"usage: {' '.join([self.prog, *positionals])} [options]{command}\n"

    def error(self, message: str) -> None:
        self.fail(f"{message[:1].upper()}{message[1:]}. Run '{self.prog} --help' to see every "
                  "option, with examples.")

    def fail(self, message: str, *, usage: bool = True) -> None:
        """Prints the one-line usage and ``message`` as one paragraph; exits with code 2."""
        if usage:
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def commands(self) -> dict[str, _Parser]:
        """The subcommands' parsers by name; empty for a parser without subcommands."""
        return {} if self._subparsers is None else self._subparsers._group_actions[0].choices

    def option_strings(self) -> list[str]:
        """Every option this parser takes, ``--help`` aside, in the order of ``--help``."""
        return [name for action in self._actions for name in action.option_strings
                if name.startswith("--") and name != "--help"]


RUN_EXAMPLES = """examples:
  medtransfer run --dataset digits --net small_cnn --epochs 1+4 --image-size 32
  medtransfer run --dataset cancer --net inception_v3 --init imagenet --freeze 0.5
  medtransfer run --dataset retina --net densenet121 --init mean_var --epochs 0+50
  medtransfer run --dataset cats_vs_dogs --net resnet50_v2 --init imagenet \\
      --strategy mirrored --mixed-precision --batch-size 64
  medtransfer run --config my_run.yaml --lr 0.001        # a YAML file, a flag wins over it
"""
REPRODUCE_EXAMPLES = """examples:
  medtransfer reproduce tensorboard_logs/default/cancer-inception_v3-imagenet-f0.50-s0
  cd /tmp && medtransfer reproduce ~/medtransfer/tensorboard_logs/demo/<run_id>
  medtransfer reproduce /shared/runs/study/cancer-mobilenet-imagenet-f0.50-s0 --overwrite
"""
LR_FIND_EXAMPLES = """examples:
  medtransfer lr-find --dataset digits --net small_cnn --image-size 32
  medtransfer lr-find --dataset cancer --net inception_v3 --init imagenet --freeze 0.5
  medtransfer lr-find --dataset retina --net densenet121 --batch-size 16 --steps 300
  medtransfer lr-find --config configs/demo.yaml --out /tmp/lr-demo
then: medtransfer run ... --lr <the suggested rate>
"""
TUNE_LR_EXAMPLES = """examples:
  medtransfer tune-lr --dataset digits --net small_cnn --image-size 32 --trials 8 --epochs 0+3
  medtransfer tune-lr --dataset cancer --net inception_v3 --init imagenet --trials 12
  medtransfer tune-lr --dataset retina --net densenet121 --oracle random --min-lr 1e-5
  KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \\
      medtransfer tune-lr --dataset cancer --net mobilenet     # and tuner0, tuner1, ...
then: medtransfer run --config tensorboard_logs/tune-lr-<dataset>-<net>/best.yaml
"""
PREPARE_EXAMPLES = """examples:
  medtransfer prepare cancer --source ~/kaggle/histopathologic-cancer-detection
  medtransfer prepare retina --source ~/kaggle/aptos2019-blindness-detection --max-size 512
  medtransfer prepare proteins --source ~/kaggle/human-protein-atlas-image-classification
  medtransfer prepare cats_vs_dogs --source ~/kaggle/dogs-vs-cats
  medtransfer prepare folder --source ~/my_images --out datasets/my_images
  medtransfer prepare medmnist --source ~/pneumoniamnist.npz --out datasets/pneumoniamnist
  medtransfer prepare chexpert --source ~/CheXpert-v1.0-small --uncertain ignore
  medtransfer prepare chestxray14 --source ~/chestxray14
  medtransfer prepare csv --source labels.csv --label-columns Edema,Effusion \
      --group-column patient --out datasets/mychest
"""
PREDICT_EXAMPLES = """examples:
  medtransfer predict tensorboard_logs/demo/<run_id> new_scans/ --out predictions.csv
  medtransfer predict RUN_DIR a.png b.jpg more/ list.csv     # files, folders, CSVs (path column)
"""
EXPORT_EXAMPLES = """examples:
  medtransfer export tensorboard_logs/demo/<run_id>                 # RUN_DIR/export/model.keras
  medtransfer export RUN_DIR --format saved_model --out serving/mymodel/1
"""


def _run_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="train, evaluate and log one configuration",
        description="Train one configuration of the study (dataset, net, init, freeze, "
                    "W+E regime) and write its run directory under "
                    "<logdir>/<experiment>/<run_id>/.",
        epilog=RUN_EXAMPLES, formatter_class=_FORMATTER,
    )
    _add_run_options(parser)
    add = parser.add_argument
    add("--overwrite", action="store_true",
        help="train afresh over the run directory's run (complete, killed, or of another "
             "configuration), deleting it")
    parser.set_defaults(
        handler=_run,
        interrupted="Every completed epoch is saved in the run directory: the same command "
                    "resumes from the last one (or starts again if none had completed).",
    )


def _add_run_options(parser: argparse.ArgumentParser, *, without: tuple[str, ...] = ()) -> None:
    """Adds ``run``'s options (every RunConfig field) except the dests in ``without``:
    lr-find and tune-lr take the same options for the same run, less those they set."""
    def add(*flags, **kwargs):
        dest = kwargs.get("dest") or flags[0].removeprefix("--").replace("-", "_")
        if dest not in without:
            parser.add_argument(*flags, **kwargs)

    add("--config", help="YAML file with run options (only what differs from the defaults; "
                         "- reads it from standard input); flags given here win over it")
    add("--dataset", help="a registered dataset or a prepared folder's name (default digits)")
    add("--net", help="backbone, see 'medtransfer list' (default small_cnn)")
    add("--init", help="glorot, imagenet, mean_var, or a run directory / weights file "
                       "to transfer from (default glorot)")
    add("--freeze", type=float, help="fraction of the backbone's bottom layers frozen in "
                                     "phase 2, in [0, 1] (default 0)")
    add("--epochs", help="W+E: W warm-up epochs (backbone frozen), then E fine-tuning "
                         "(default 3+50)")
    add("--lr", type=float, help="learning rate, the first under a schedule (default: the "
                                 "dataset's)")
    add("--optimizer", metavar="{" + ",".join(OPTIMIZERS) + "}",
        help="adam (default, the study) or sgd (momentum 0.9)")
    add("--lr-schedule", metavar="{" + ",".join(LR_SCHEDULES) + "}",
        help="constant (default); plateau: x0.1 when the training loss has not improved "
             "for --plateau-patience epochs; multistep: x0.1 at 50%% and 75%% of the W+E "
             "epochs")
    add("--plateau-patience", type=int,
        help="epochs without a lower training loss before plateau divides the learning "
             "rate by 10 (default 10)")
    add("--batch-size", type=int, help="per-replica batch size (default 32)")
    add("--image-size", type=int, help="square input size (default: the net's)")
    add("--seed", type=int, help="seeds weights, shuffling and augmentation (default 0)")
    add("--train-size", type=int, help="train on a stratified subset of N training images")
    add("--classes", help="keep only these classes, comma-separated names (e.g. 0,4); they "
                          "become classes 0..k-1 in this order (default: every class)")
    add("--findings", help="multi-label dataset: the findings to predict, comma-separated "
                           "names, a sigmoid each (default: the dataset's, e.g. CheXpert's "
                           "five); one finding is a binary task")
    add("--any-finding", action="store_const", const=True,
        help="multi-label dataset: train healthy vs any finding (of --findings), a "
             "two-class single-label task")
    add("--scaling", metavar="{" + ",".join(SCALINGS) + "}",
        help="unit: pixels in [0, 1] (default); native: the net's preprocess_input")
    add("--class-weight", metavar="{" + ",".join(CLASS_WEIGHTS) + "}",
        help="none (default, the study) or balanced: weight each class's loss by "
             "n_images / (n_classes * its count) in the training images used (multi-label: "
             "each finding's positives by its negatives / positives)")
    add("--patience", type=int,
        help="end phase 2 when the validation micro AUC has not improved for N of its "
             "epochs (default: off, every epoch trains)")
    add("--no-augment", dest="augment", action="store_const", const=False,
        help="no training augmentation at all")
    for name in ("flips", "noise", "color"):
        add(f"--{name}", dest=name, action=argparse.BooleanOptionalAction,
            help=f"switch the {name} augmentation (default: the dataset's)")
    add("--affine", dest="affine", action=argparse.BooleanOptionalAction,
        help="random affine augmentation: rotation, translation, scale, shear (default off)")
    add("--strategy", metavar="{" + ",".join(STRATEGIES) + "}",
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
    add("--cache-limit", help="memory for decoded images, given to the splits in the order "
                              "validation, train, test; a split that does not fit whole is "
                              "read from disk every epoch (default 4GiB)")
    add("--experiment", help="folder under --logdir grouping runs (default 'default')")
    add("--logdir", help="root of the run directories (default tensorboard_logs)")
    add("--data-dir", help="root of the prepared datasets (default datasets)")


def _config_from_args(args: argparse.Namespace):
    """The run config from ``--config`` and the run options given (flags win).

    Checked before TensorFlow loads, so a bad value fails at once.
    """
    from medtransfer.api import run_config
    from medtransfer.config import FIELDS

    return run_config(args.config, source="the command line",
                      **{key: value for key, value in vars(args).items() if key in FIELDS})


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` given on the command line (the library has the
    defaults, so that they are written once)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)

    from medtransfer.api import run

    trained = run(config, overwrite=args.overwrite)
    metrics = trained.metrics
    if "test_auc_mean" in metrics:  # a multi-label run: its primary metric first
        print(
            f"\ntest AUC (mean over findings) {metrics['test_auc_mean']:.4f}, micro "
            f"{metrics['test_auc_micro']:.4f}, accuracy {metrics['test_accuracy']:.4f} "
            f"(best epoch {metrics['best_epoch']}, validation mean AUC "
            f"{metrics['val_auc_mean_best']:.4f})"
        )
    elif "test_auc_micro" in metrics:
        print(
            f"\ntest AUC (micro) {metrics['test_auc_micro']:.4f}, macro "
            f"{metrics['test_auc_macro']:.4f}, accuracy {metrics['test_accuracy']:.4f} "
            f"(best epoch {metrics['best_epoch']}, validation AUC "
            f"{metrics['val_auc_micro_best']:.4f})"
        )
    print(f"metrics:     {_short_path(trained.path / 'metrics.json')}")
    print(f"TensorBoard: {tensorboard_command(trained.path.parent)}")
    return 0


def tensorboard_command(logdir: Path) -> str:
    """``tensorboard --logdir DIR`` as the user can type it where they stand.

    ``tensorboard`` when it is on PATH (an activated venv), else the one installed beside
    this Python (``.venv/bin/tensorboard`` after ``make demo``), else ``python -m``.
    """
    if shutil.which("tensorboard"):
        program = "tensorboard"
    elif (beside := Path(sys.prefix) / "bin" / "tensorboard").exists():
        program = shlex.quote(_short_path(beside))
    else:
        program = f"{shlex.quote(_short_path(Path(sys.executable)))} -m tensorboard.main"
    return f"{program} --logdir {shlex.quote(_short_path(logdir))}"


def _short_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, else absolute.

    Run directories are stored absolute, so that their config works from anywhere, but read
    better short. ``abspath``, not ``resolve``: a venv's ``bin/python`` is a symlink that
    must stay one.
    """
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


PRETRAIN_EXAMPLES = """examples:
  medtransfer pretrain autoencoder --dataset digits --net small_cnn --image-size 32
  medtransfer pretrain autoencoder --dataset chestmnist --net small_cnn --epochs 10 \\
      --experiment exercise
then: medtransfer run --dataset ... --net <the same net> --init <the directory it printed>
"""


def _pretrain_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a backbone without labels (autoencoder), for run --init",
        description="Train the net's backbone as the encoder of an autoencoder with a "
                    "mirrored decoder, to reconstruct the training images (labels are "
                    "never read; --train-size takes a seeded subset), keep the epoch with "
                    "the lowest validation MSE, and report the test MSE, PSNR and SSIM. "
                    "Writes <logdir>/<experiment>/autoencoder/<id>/, which 'run --init' "
                    "takes: the backbone loads, the classifier head is new.",
        epilog=PRETRAIN_EXAMPLES, formatter_class=_FORMATTER,
    )
    parser.add_argument("method", help="the pretraining: autoencoder")
    _add_run_options(parser, without=(
        "init", "freeze", "epochs", "lr", "scaling", "class_weight", "patience", "augment",
        "flips", "noise", "color", "strategy", "mixed_precision", "bn_stats", "weights_file",
        "head_units", "dropout"))
    add = parser.add_argument
    add("--epochs", type=int, help="epochs of training (default 10, as the MedMNIST exercise)")
    add("--lr", type=float, help="Adam learning rate (default 0.001)")
    add("--overwrite", action="store_true", help="train again over a complete pretraining")
    parser.set_defaults(
        handler=_pretrain,
        interrupted="A pretraining does not resume: the same command starts it again.",
    )


def _pretrain(args: argparse.Namespace) -> int:
    from medtransfer.pretraining.plan import check_method

    check_method(args.method)
    epochs = vars(args).pop("epochs")
    config = _config_from_args(args)

    from medtransfer.api import pretrain

    result = pretrain(args.method, config, overwrite=args.overwrite,
                      **({"epochs": epochs} if epochs is not None else {}))
    metrics = result.metrics
    print(f"\ntest MSE {metrics['test_mse']:.5f}, PSNR {metrics['test_psnr']:.2f} dB, SSIM "
          f"{metrics['test_ssim']:.4f} (best epoch {metrics['best_epoch']})")
    print(f"reconstructions: {_short_path(result.figure)}")
    print(f"then:            medtransfer run ... --net {metrics['net']} --init "
          f"{shlex.quote(_short_path(result.path))}")
    return 0


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
    parser.set_defaults(
        handler=_reproduce,
        interrupted="Every completed epoch of the copy is saved: the same command resumes it.",
    )


def _reproduce(args: argparse.Namespace) -> int:
    from medtransfer.training.reproduce import reproduce_run

    print(reproduce_run(args.run_dir, overwrite=args.overwrite).comparison())
    return 0


def _lr_find_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "lr-find", help="learning-rate range test: a suggested --lr for a run",
        description="Train the run's own pipeline and model (frozen as in phase 2) for a few "
                    "hundred batches with a learning rate growing exponentially from "
                    "--min-lr to --max-lr, stop when the loss explodes, and suggest a rate: "
                    "where the smoothed loss falls fastest, and its minimum's rate / 10. "
                    "Writes lr_find.csv, lr_find.png and suggestion.json to --out "
                    "(default <logdir>/lr-find/<run id without lr and epochs>/), which is "
                    "not a run directory.",
        epilog=LR_FIND_EXAMPLES, formatter_class=_FORMATTER,
    )
    _add_run_options(parser, without=("epochs", "lr", "experiment", "deterministic",
                                      "patience", "lr_schedule", "plateau_patience"))
    add = parser.add_argument
    add("--steps", type=int,
        help="training batches at most; a short training split is cycled (default 200)")
    add("--min-lr", type=float, help="the first rate (default 1e-7)")
    add("--max-lr", type=float, help="the last rate (default 1)")
    add("--out", type=Path, help="where to write the curve and the suggestion")
    _add_format_option(parser)
    parser.set_defaults(handler=_lr_find)


def _lr_find(args: argparse.Namespace) -> int:
    from medtransfer.tune.lr_find import find_lr

    result = find_lr(_config_from_args(args), out=args.out, figure_format=args.format,
                     **_given(args, "steps", "min_lr", "max_lr"))
    print(result.summary())
    print(f"curve:       {_short_path(result.out_dir / f'lr_find.{args.format}')} "
          f"(and lr_find.csv, suggestion.json)")
    return 0


def _tune_lr_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tune-lr", help="search the learning rate with short real runs (keras-tuner)",
        description="Train --trials short runs of the configuration at learning rates "
                    "drawn log-uniformly from [--min-lr, --max-lr] by a seeded keras-tuner "
                    "oracle, each an ordinary run directory under --experiment (default "
                    "tune-lr-<dataset>-<net>), and print the rate with the best validation "
                    "AUC. Writes <experiment>/best.yaml for 'run --config'. Killed, the "
                    "same command continues the search; with keras-tuner's variables set "
                    "it is shared by many machines, as a sweep is.",
        epilog=TUNE_LR_EXAMPLES, formatter_class=_FORMATTER,
    )
    _add_run_options(parser, without=("lr",))
    add = parser.add_argument
    add("--trials", type=int, help="runs in the search, counting an interrupted search's "
                                   "(default 10)")
    add("--min-lr", type=float, help="lowest rate searched (default 1e-6)")
    add("--max-lr", type=float, help="highest rate searched (default 0.1)")
    add("--oracle", help="bayesian (default) or random")
    parser.set_defaults(
        handler=_tune_lr,
        interrupted="The search is saved after every trial: the same command continues it, "
                    "and the trial that was training resumes from its last completed epoch.",
    )


def _tune_lr(args: argparse.Namespace) -> int:
    from medtransfer.config import RunConfig
    from medtransfer.tune.tune_lr import SEARCH_EPOCHS, tune_lr

    config = _config_from_args(args)
    if config.epochs == RunConfig.epochs:
        # The run's 3+50 is the real training; a search needs short runs.
        config = config.replace(epochs=SEARCH_EPOCHS)
    print(tune_lr(config, **_given(args, "trials", "min_lr", "max_lr", "oracle")).summary())
    return 0


SWEEP_EXAMPLES = """examples:
  medtransfer sweep configs/demo.yaml --dry-run      # the plan: every run, complete or to do
  medtransfer sweep configs/demo.yaml                # run what is not complete yet
  medtransfer sweep configs/kierzynka2019.yaml --logdir /shared/tensorboard_logs
  medtransfer sweep configs/demo.yaml --parallel auto   # one run per GPU at once
  medtransfer sweep configs/kierzynka2019.yaml --estimate --machines 4   # the cost, first
  # many machines (keras-tuner's distributed mode): the same command on every machine
  KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \\
      medtransfer sweep configs/kierzynka2019.yaml   # the oracle, on 10.0.0.1
  KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \\
      medtransfer sweep configs/kierzynka2019.yaml   # a worker; tuner1, tuner2, ... likewise
"""


def _sweep_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", help="run every configuration of a grid, on one or many machines",
        description="Expand a sweep file (experiment, base, grid) into its runs and train "
                    "each one not complete yet in its own process; a failed run is recorded "
                    "in its run directory's error.txt and the others go on. Ctrl-C stops; the "
                    "same command continues. With KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP "
                    "and KERASTUNER_ORACLE_PORT set, machines share the grid: 'chief' serves "
                    "the runs, every other id trains them.",
        epilog=SWEEP_EXAMPLES, formatter_class=_FORMATTER,
    )
    parser.add_argument("config", type=Path, help="the sweep file (YAML)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (every run, complete or to do) and stop")
    parser.add_argument("--logdir", help="root of the experiments (default: base's logdir, "
                                         "else tensorboard_logs)")
    parser.add_argument("--parallel", type=_parallel_count, metavar="N|auto",
                        help="train N runs at once on this machine, each in its own process "
                             "with its own GPUs (CUDA_VISIBLE_DEVICES) or, without GPUs, its "
                             "share of the cores; auto: visible GPUs / --gpus-per-run "
                             "(default: one run at a time)")
    parser.add_argument("--gpus-per-run", type=int, default=1, metavar="K",
                        help="GPUs each run gets, its own CUDA_VISIBLE_DEVICES (default 1; "
                             "without --parallel: one run at a time on K GPUs)")
    parser.add_argument("--estimate", action="store_true",
                        help="print each run's and the grid's expected wall time, measured by "
                             "a short calibration on this machine (cached); trains no run")
    parser.add_argument("--machines", type=int, default=1, metavar="N",
                        help="with --estimate: the expected end of the grid on N such "
                             "machines (default 1)")
    parser.set_defaults(
        handler=_sweep,
        interrupted="The run in progress was stopped with its completed epochs saved. The "
                    "same command continues: complete runs are skipped and the stopped run "
                    "resumes from its last epoch.",
    )


def _sweep(args: argparse.Namespace) -> int:
    from medtransfer.api import estimate, sweep

    if args.machines != 1 and not args.estimate:
        raise MedtransferError(
            f"--machines {args.machines} only says where an estimate ends: add --estimate. "
            "To share the grid between machines, run the same sweep on each with "
            "keras-tuner's variables (see 'medtransfer sweep --help').")
    if args.estimate:
        print(estimate(args.config, logdir=args.logdir, machines=args.machines,
                       parallel=args.parallel, gpus_per_run=args.gpus_per_run).text())
        return 0
    result = sweep(args.config, logdir=args.logdir, dry_run=args.dry_run,
                   parallel=args.parallel, gpus_per_run=args.gpus_per_run)
    return 1 if result.failed else 0  # the failures are listed already


def _parallel_count(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a number of runs: give a whole number such as 2, or auto "
            "(the visible GPUs divided by --gpus-per-run)") from None


def _prepare_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="decode, check and split a downloaded dataset once",
        description="Read a dataset in its downloaded layout, list every image that cannot "
                    "be used in rejected.csv, split it 8:1:1 (stratified, seeded; grouped by "
                    "patient when there is a patient id) and store "
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
    add("--image-format", choices=IMAGE_FORMATS, default="bmp",
        help="how images are stored, both lossless: bmp (default; raw pixels, about 10x "
             "faster to decode) or png (smaller on disk)")
    add("--min-class-count", type=int, default=None,
        help="proteins: keep classes with at least this many single-label images")
    add("--views", help="chexpert: frontal (default), lateral or all")
    add("--uncertain", help="chexpert: what an uncertain (-1) label becomes: ones (default), "
                            "zeros or ignore (masked out of loss and metrics)")
    add("--label-columns", help="csv multi-label: one column per finding "
                                "(1, 0, -1 unknown, blank negative): A,B,C")
    add("--labels-column", help="csv multi-label: one column of finding names separated by "
                                "--labels-sep")
    add("--labels-sep", help="csv: the separator of --labels-column (default |)")
    add("--group-column", help="csv: a patient (group) id column; no group is in two splits")
    add("--workers", type=int, default=None, help="conversion threads (default: every core)")
    add("--force", action="store_true", help="prepare again even if already prepared")
    add("--no-progress", dest="progress", action="store_false",
        help="no progress lines (count, rate, ETA) on stderr")
    parser.set_defaults(
        handler=_prepare,
        interrupted="The folder is usable only once manifest.json is written, last: the same "
                    "command prepares it again from the start (or, had it finished, says so).",
    )


def _prepare(args: argparse.Namespace) -> int:
    from medtransfer.api import prepare
    from medtransfer.machine import keep_freed_memory

    keep_freed_memory()  # a quarter of prepare's time went to page faults otherwise
    result = prepare(
        args.dataset, source=args.source, out=args.out, data_dir=args.data_dir,
        seed=args.seed, max_reject=args.max_reject, max_size=args.max_size,
        image_format=args.image_format, min_class_count=args.min_class_count,
        workers=args.workers, force=args.force, progress=args.progress, views=args.views,
        uncertain=args.uncertain, label_columns=args.label_columns,
        labels_column=args.labels_column, labels_sep=args.labels_sep,
        group_column=args.group_column,
    )
    if not result.skipped:
        totals = result.manifest["totals"]
        print(f"prepared {result.path}: "
              + ", ".join(f"{split} {totals[split]}" for split in result.counts)
              + f"; {result.num_rejected} rejected (see {result.path / 'rejected.csv'})")
    return 0


TSNE_EXAMPLES = """examples:
  medtransfer tsne tensorboard_logs/demo/<run_id>
  medtransfer tsne tensorboard_logs/demo/<run_id> --method both     # PCA beside t-SNE
  medtransfer tsne tensorboard_logs/study/cancer-inception_v3-imagenet-f{1.00,0.10,0.00}-s0 \\
      --out figures/ --max-images 2000
  tensorboard --logdir tensorboard_logs/demo   # then the Projector tab
"""
SIMILARITY_EXAMPLES = """examples:
  medtransfer similarity tensorboard_logs/demo/<run_id>
  medtransfer similarity RUN_IMAGENET RUN_GLOROT --out figures/      # each vs its own init
  medtransfer similarity RUN_SEED0 --against RUN_SEED1               # two runs, block by block
  medtransfer similarity --experiment tensorboard_logs/transfusion   # Transfusion's figure 2
"""
GRADCAM_EXAMPLES = """examples:
  medtransfer gradcam tensorboard_logs/demo/<run_id>
  medtransfer gradcam tensorboard_logs/study/cancer-inception_v3-imagenet-f0.00-s0 \\
      --images 32 --class 1 --out figures/
"""


def _inspect_parser(subparsers, name: str, help_text: str, description: str,
                    examples: str, handler) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=description,
                                   epilog=examples, formatter_class=_FORMATTER)
    parser.add_argument("--out", type=Path,
                        help="folder for the figure and table (default <first run>/inspect)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the sample of test images (default 0)")
    _add_format_option(parser)
    parser.set_defaults(handler=handler)
    return parser


def _add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="png", metavar="{png,pdf,svg}",
                        help="figure file format: png (200 dpi, the default), or pdf / svg "
                             "(vector, for a paper)")


def _tsne_parser(subparsers) -> None:
    parser = _inspect_parser(
        subparsers, "tsne", "t-SNE / PCA of the penultimate features of finished runs",
        "Embed the globally pooled features of the best checkpoint on the test split with "
        "t-SNE, PCA or both (--method), one panel per run side by side in tsne.png (pca.png, "
        "tsne_pca.png), coloured by class, with the coordinates in tsne.csv (pca.csv); also "
        "write each run's features for TensorBoard's Projector (<run>/projector/).",
        TSNE_EXAMPLES, _tsne)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="complete run directories")
    parser.add_argument("--max-images", type=int, default=1000,
                        help="test images per run at most, a seeded sample (default 1000)")
    parser.add_argument("--method", default="tsne", metavar="{tsne,pca,both}",
                        help="tsne (default), pca (the first two principal components), or "
                             "both (a row each, as the MedMNIST exercise shows them)")
    parser.add_argument("--finding", help="multi-label runs: colour by this finding "
                                          "(absent, present, unknown; default the first)")


def _tsne(args: argparse.Namespace) -> int:
    from medtransfer.api import tsne

    result = tsne(args.run_dirs, out=args.out, max_images=args.max_images, seed=args.seed,
                  format=args.format, method=args.method, finding=args.finding)
    tables = " and ".join(table.name for table in result.tables.values())
    print(f"figure:    {result.figure} ({tables} beside it)")
    for config in result.projector_configs:
        print(f"projector: {config} (tensorboard --logdir {config.parent}, Projector tab)")
    return 0


def _similarity_parser(subparsers) -> None:
    parser = _inspect_parser(
        subparsers, "similarity", "SVCCA per backbone block: how far training moved it",
        "For each block of the backbone, the SVCCA similarity (SVD keeping 99% of the "
        "variance, then CCA, mean correlation) between a trained run and its own "
        "initialisation, rebuilt from its config and seed, or another run of the same net, "
        "on a seeded sample of test images: similarity.csv and similarity.png (one line "
        "per run, blocks from the input side). With --experiment instead of runs, "
        "Transfusion's figure 2: per net, the SVCCA of the top two blocks between two "
        "glorot runs (two seeds: the baseline) and between them and an imagenet run, as "
        "transfusion_similarity.png and .csv.",
        SIMILARITY_EXAMPLES, _similarity)
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="complete run directories")
    parser.add_argument("--experiment", type=Path, metavar="DIR",
                        help="an experiment folder (<logdir>/<experiment>) with, per net, two "
                             "glorot seeds and an imagenet run at freeze 0: Transfusion's "
                             "figure 2 (default --out DIR/inspect)")
    parser.add_argument("--against", default="init",
                        help="'init' (each run's initial weights, the default) or a run "
                             "directory of the same net and input size")
    parser.add_argument("--images", type=int, default=500,
                        help="test images at most, a seeded sample (default 500)")


def _similarity(args: argparse.Namespace) -> int:
    if args.experiment is not None:
        return _experiment_similarity(args)
    if not args.run_dirs:
        raise MedtransferError(
            "similarity needs run directories (RUN_DIR ...) or --experiment DIR. Run "
            "'medtransfer similarity --help' to see both, with examples.")

    from medtransfer.inspect.similarity import run_similarity

    result = run_similarity(args.run_dirs, args.against, args.out, max_images=args.images,
                            seed=args.seed, figure_format=args.format)
    for row in result.rows:
        print(f"{row.run_id} vs {row.against}  block {row.block} {row.layer:<22} "
              f"{row.similarity:.3f}")
    print(f"similarity: {result.figure} ({result.table.name} beside it)")
    return 0


def _experiment_similarity(args: argparse.Namespace) -> int:
    if args.run_dirs or args.against != "init":
        raise MedtransferError(
            "similarity --experiment picks the runs of the experiment itself; give either "
            "--experiment DIR or run directories (with --against), not both.")

    from medtransfer.inspect.similarity import experiment_similarity

    result = experiment_similarity(args.experiment, args.out, max_images=args.images,
                                   seed=args.seed, figure_format=args.format)
    print(f"{'net':<14}{'dataset':<14}{'random vs random':>18}{'random vs imagenet':>20}")
    for net in result.nets:
        print(f"{net.net:<14}{net.dataset:<14}{net.random:>18.3f}{net.imagenet:>20.3f}")
    print(f"similarity: {result.figure} ({result.table.name} beside it)")
    return 0


def _gradcam_parser(subparsers) -> None:
    parser = _inspect_parser(
        subparsers, "gradcam", "Grad-CAM heatmaps: where the network looks",
        "Overlay Grad-CAM heatmaps (gradient of the class score with respect to the "
        "backbone's last feature map) of the best checkpoint on test images, in a grid "
        "with each image's true label and the probability of the class explained.",
        GRADCAM_EXAMPLES, _gradcam)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a complete run directory")
    parser.add_argument("--images", type=int, default=16,
                        help="test images, a seeded sample (default 16)")
    parser.add_argument("--class", dest="class_name",
                        help="the class (a multi-label run: the finding) to explain in "
                             "every image (default: each image's most probable one)")


def _gradcam(args: argparse.Namespace) -> int:
    from medtransfer.inspect.gradcam import run_gradcam

    result = run_gradcam(args.run_dir, args.out, images=args.images,
                         class_name=args.class_name, seed=args.seed,
                         figure_format=args.format)
    print(f"Grad-CAM: {result.figure}")
    return 0


def _predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify new images with a finished run's best checkpoint",
        description="Classify new images with a finished run: each image gets its dataset's "
                    "preparation (decoding, the layout's own step, downsizing) and the run's "
                    "resizing and scaling, then the best checkpoint. Writes a CSV with the "
                    "path, the predicted class and one probability per class; unreadable "
                    "files are listed with the reason in <out stem>.rejected.csv.",
        epilog=PREDICT_EXAMPLES, formatter_class=_FORMATTER,
    )
    parser.add_argument("run_dir", help="a complete run directory")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders of images, or CSV files with a path column")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"),
                        help="the predictions CSV (default predictions.csv)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass "
                                                       "(default: the run's)")
    parser.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from medtransfer.serve.predict import predict_images

    result = predict_images(args.run_dir, args.inputs, out=args.out, batch_size=args.batch_size)
    rejected = (f"; {len(result.rejected)} rejected (see {result.rejected_file})"
                if result.rejected else "")
    print(f"predicted {result.predicted} image(s) into {result.out}{rejected}")
    return 0


def _export_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="save a finished run as a model that needs only Keras or TF Serving",
        description="Save a finished run's best checkpoint as a self-contained model: it takes "
                    "uint8 RGB images of any size (batch, height, width, 3) and resizes and "
                    "scales them itself. keras: a .keras file that keras.saving.load_model "
                    "reads without medtransfer; saved_model: a SavedModel with a "
                    "serving_default signature for TensorFlow Serving. The class names go in "
                    "the model (output class_name) and in a JSON file beside it.",
        epilog=EXPORT_EXAMPLES, formatter_class=_FORMATTER,
    )
    parser.add_argument("run_dir", help="a complete run directory")
    parser.add_argument("--format", default="keras", metavar="{" + ",".join(EXPORT_FORMATS) + "}",
                        help="keras: a .keras file (default); saved_model: for TF Serving")
    parser.add_argument("--out", type=Path, help="the .keras file or SavedModel folder "
                                                 "(default RUN_DIR/export/...)")
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from medtransfer.serve.export import export_run

    result = export_run(args.run_dir, format=args.format, out=args.out)
    print(f"exported {result.path} ({len(result.class_names)} classes; {result.info})")
    return 0


REPORT_EXAMPLES = """examples:
  medtransfer report tensorboard_logs/demo
  medtransfer report tensorboard_logs/kierzynka2019 --out paper/results
  medtransfer report tensorboard_logs/kierzynka2019 --resamples 5000 --seed 1
"""


def _report_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="an experiment's runs as the study's tables, statistics and figures",
        description="Read every run directory of an experiment and write results.csv (one "
                    "row per run), summary.md (test AUC per dataset x net x init, per freeze "
                    "level, improvement and speed-up over glorot, bootstrap intervals and "
                    "paired p-values) and figures (--format). Prints the main table as markdown.",
        epilog=REPORT_EXAMPLES, formatter_class=_FORMATTER,
    )
    add = parser.add_argument
    add("experiment_dir", type=Path, help="<logdir>/<experiment>, e.g. tensorboard_logs/demo")
    add("--out", type=Path, help="the report folder (default EXPERIMENT_DIR/report)")
    add("--resamples", type=int, default=1000,
        help="bootstrap resamples over the test images, at least 1000 (default 1000)")
    add("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    _add_format_option(parser)
    parser.set_defaults(
        handler=_report,
        interrupted="Nothing is half-written: each report file is replaced whole.",
    )


def _report(args: argparse.Namespace) -> int:
    from medtransfer.api import report as build

    report = build(args.experiment_dir, out=args.out, resamples=args.resamples,
                   seed=args.seed, format=args.format)
    print(report.main_text)
    for path, problem in report.skipped:
        print(f"skipped {path}: {problem}")
    print(f"summary: {report.summary_file}")
    print(f"results: {report.results_file}")
    print(f"figures: {', '.join(str(path) for path in report.figures) or 'none'}")
    return 0


def _list_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "list", help="nets, datasets and inits with their defaults; what is prepared",
        description="List the registered nets, datasets and inits with their defaults, and "
                    "every dataset prepared under --data-dir with its classes and counts.",
        epilog="examples:\n  medtransfer list\n  medtransfer list --data-dir /shared/datasets",
        formatter_class=_FORMATTER)
    parser.add_argument("--data-dir", type=Path, default=Path("datasets"),
                        help="root of the prepared datasets (default datasets)")
    parser.set_defaults(handler=_list)


def _list(args: argparse.Namespace) -> int:
    # Registries and manifests only (the rows mt.list_nets / mt.list_datasets show): no
    # TensorFlow, no pandas, so the answer is immediate.
    from medtransfer.data.catalog import prepared_datasets
    from medtransfer.listing import dataset_rows, net_rows
    from medtransfer.options import INITS

    print("nets:")
    print(f"  {'name':<14}{'input':>6}{'min':>6}  imagenet  {'blocks':<40}description")
    for net in net_rows():
        print(f"  {net['name']:<14}{net['default_input']:>6}{net['min_input']:>6}  "
              f"{'yes' if net['imagenet'] else 'no':<8}  {net['blocks']:<40}"
              f"{net['description']}")
    print("\ndatasets:")
    print(f"  {'name':<14}{'classes':>8}{'lr':>8}  {'prepared':<9} augmentation")
    for row in dataset_rows(args.data_dir):
        if not row["registered"]:
            continue
        # "-": as many classes as the data has (your own images, proteins' selection).
        print(f"  {row['name']:<14}{row['classes'] or '-':>8}{row['lr']:>8g}  "
              f"{row['prepared']:<9} "
              f"{row['augmentation']}")
        print(textwrap.fill(row["description"], width=88, initial_indent=" " * 6,
                            subsequent_indent=" " * 6))
    prepared = prepared_datasets(args.data_dir)
    print(f"\nprepared in {args.data_dir}/ (run --dataset NAME):")
    if not prepared:
        print("  none yet: 'medtransfer prepare' makes one, and 'run --dataset digits' "
              "prepares digits itself")
    else:
        print(f"  {'name':<14}{'layout':<14}{'classes':>7}{'train':>8}{'validation':>11}"
              f"{'test':>7}")
    for summary in prepared:
        totals = summary.totals
        print(f"  {summary.name:<14}{summary.layout:<14}{len(summary.class_names):>7}"
              f"{totals.get('train', 0):>8}{totals.get('validation', 0):>11}"
              f"{totals.get('test', 0):>7}")
        print(textwrap.fill("classes: " + ", ".join(summary.class_names), width=88,
                            initial_indent=" " * 6, subsequent_indent=" " * 15))
    print("\ninits: " + ", ".join(INITS) + ", or a path to a run directory / weights file")
    print("defaults: --epochs 3+50, --freeze 0, --init glorot, --scaling unit, "
          "--batch-size 32")
    return 0


def build_parser() -> _Parser:
    parser = _Parser(
        prog="medtransfer",
        description="Does ImageNet transfer learning help on my medical images, with which "
                    "network, and how much should I freeze?",
        epilog="Run 'medtransfer <command> --help' for the options and examples of each. "
               "'medtransfer' alone prints this help and exits with code 2.",
    )
    parser.add_argument("--version", action="version", version=f"medtransfer {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up messages (also MEDTRANSFER_VERBOSE=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    _list_parser(subparsers)
    _prepare_parser(subparsers)
    _run_parser(subparsers)
    _pretrain_parser(subparsers)
    _predict_parser(subparsers)
    _export_parser(subparsers)
    _reproduce_parser(subparsers)
    _sweep_parser(subparsers)
    _report_parser(subparsers)
    _tsne_parser(subparsers)
    _similarity_parser(subparsers)
    _gradcam_parser(subparsers)
    _lr_find_parser(subparsers)
    _tune_lr_parser(subparsers)
    return parser


def _parse(parser: _Parser, argv: list[str]) -> argparse.Namespace:
    """Parses ``argv``; a usage error exits with code 2 after one usage line and a paragraph."""
    commands = parser.commands()
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command is not None and command not in commands:
        parser.fail(unknown_name_message(command, commands, "command",
                                         see="Run 'medtransfer --help' to see what each does."))
    args, extra = parser.parse_known_args(argv)
    if args.command is None and not extra:
        parser.print_help(sys.stderr)
        parser.fail(f"Give a command: {', '.join(commands)}.", usage=False)
    subparser = commands.get(args.command, parser)
    options = [arg.split("=", 1)[0] for arg in extra if arg.startswith("-")]
    if options and options[0] in parser.option_strings() and subparser is not parser:
        subparser.fail(f"'{options[0]}' is an option of medtransfer itself, so it goes before "
                       f"the command: 'medtransfer {options[0]} {args.command} ...'.")
    if options:
        subparser.fail(unknown_name_message(
            options[0], subparser.option_strings(), "option",
            see=f"Run '{subparser.prog} --help' to see what each does."))
    if extra:
        subparser.fail(f"Unexpected argument '{extra[0]}'. Each option's value follows it "
                       f"(for example --dataset digits); run '{subparser.prog} --help' to see "
                       "them.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    from medtransfer.lifetime import die_with_parent_if_asked
    from medtransfer.machine import (
        import_heavy_libraries_without_collecting,
        load_unused_keras_extras_on_first_use,
        use_core_share_if_asked,
    )
    from medtransfer.quiet import quiet_tensorflow_start

    die_with_parent_if_asked()
    use_core_share_if_asked()
    import_heavy_libraries_without_collecting()
    load_unused_keras_extras_on_first_use()

    args = _parse(build_parser(), list(sys.argv[1:] if argv is None else argv))
    # Handlers see only their subcommand's options (and command, handler).
    quiet_tensorflow_start(verbose=vars(args).pop("verbose"))
    interrupted = vars(args).pop("interrupted", "")
    try:
        return args.handler(args)
    except MedtransferError as error:
        print(f"medtransfer {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"medtransfer {args.command}: interrupted. {interrupted}".rstrip(),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
