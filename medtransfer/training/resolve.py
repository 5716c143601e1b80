"""A run's config resolved against its dataset and net, and checked, without TensorFlow:
``medtransfer run`` (and ``mt.run``) resolve it before TensorFlow loads, so that a
misspelt net or dataset, a dataset not prepared or an input size below the net's minimum
fails at once instead of after seconds of start-up.
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.config import RunConfig, absolute_path, default_image_size, validate
from medtransfer.data.prepared import PreparedDataset, load_prepared
from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.models.checks import check_image_size, check_init
from medtransfer.models.registry import get_net
from medtransfer.training.task import run_task


def resolve_config(config: RunConfig) -> tuple[RunConfig, PreparedDataset]:
    """Fills the dataset's and net's defaults and checks what depends on them.

    Returns:
        The resolved config (no ``None`` left where a default exists; data_dir, logdir and
        a path init absolute, so that its config.yaml works from any directory) and the
        dataset.

    Raises:
        MedtransferError: unknown dataset or net, a dataset not prepared, a class count
            that does not match, an input size below the net's minimum, an init or
            weights file that cannot work (see ``check_init``).
    """
    validate(config)
    net = get_net(config.net)
    dataset = load_prepared(config.dataset, Path(config.data_dir))
    if not dataset.multi_label:
        for name in config.classes or ():
            look_up_option(name, dataset.class_names, "class name", see=(
                f"--classes takes class names of dataset '{config.dataset}', comma-separated."))
    task = run_task(config, dataset)
    num_classes = task.num_outputs
    if config.num_classes is not None and config.num_classes != num_classes:
        raise MedtransferError(
            f"The config says num_classes: {config.num_classes}, but dataset "
            f"'{config.dataset}' has {num_classes} "
            f"{'outputs for this task' if task.label_length else 'classes'}"
            f"{' kept by classes' if config.classes else ''}. Remove num_classes from "
            "the config (it is filled from the dataset) or use the dataset it was made for."
        )
    image_size = config.image_size or default_image_size(config.net, config.dataset,
                                                         Path(config.data_dir))
    check_image_size(net, image_size)
    check_init(net, config.init, config.weights_file)
    defaults = dataset.spec.augment
    resolved = config.replace(
        lr=config.lr if config.lr is not None else dataset.spec.default_lr,
        image_size=image_size,
        num_classes=num_classes,
        # A multi-label run records the findings it reads (--any-finding: of which any).
        findings=(tuple(task.class_names) if task.multi_label else
                  tuple(dataset.class_names[i] for i in task.keep_labels)
                  if task.any_finding else None),
        flips=defaults.flips if config.flips is None else config.flips,
        noise=defaults.noise if config.noise is None else config.noise,
        color=defaults.color if config.color is None else config.color,
        data_dir=absolute_path(config.data_dir),
        logdir=absolute_path(config.logdir),
        init=absolute_path(config.init) if config.init_is_path else config.init,
        weights_file=config.weights_file and absolute_path(config.weights_file),
    )
    return resolved, dataset
