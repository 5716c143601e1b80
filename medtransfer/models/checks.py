"""Checks of a run's net, input size and init that read no weights and load no TensorFlow,
so that a bad value fails at once, before the run directory exists (``check_init``,
``check_image_size``); :mod:`medtransfer.models.init` builds from what they accept.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from medtransfer.config import RUN_CONFIG, RUN_WEIGHTS
from medtransfer.errors import MedtransferError, look_up_option, working_directory_note
from medtransfer.models.registry import NETS, NetSpec
from medtransfer.options import INITS


def check_image_size(spec: NetSpec, image_size: int) -> None:
    """Fails unless ``image_size`` is at least the net's minimum input size.

    Raises:
        MedtransferError: ``image_size`` is too small; the message names the net's minimum
            and its default.
    """
    if image_size < spec.min_input_size:
        raise MedtransferError(
            f"--image-size {image_size} is too small for net '{spec.name}': its minimum is "
            f"{spec.min_input_size} px and its default {spec.default_input_size} px. Use at "
            f"least {spec.min_input_size}; below its smallest input ({spec.min_input_size} px) "
            "the feature maps shrink to nothing."
        )


def check_init(spec: NetSpec, init: str, weights_file: str | Path | None = None) -> None:
    """Checks ``init`` and ``weights_file`` without reading any weights (fast, so a run
    can fail before it creates its run directory); a run directory's config.yaml must
    name this net.

    Raises:
        MedtransferError: ``imagenet`` / ``mean_var`` for a net without ImageNet weights, a
            ``weights_file`` that does not exist or does not go with ``init``, an init that
            is neither a known name nor an existing path (with a did-you-mean), or a run
            directory of another net or without weights.
    """
    if init in ("imagenet", "mean_var"):
        check_imagenet(spec, weights_file)
        return
    if init == "glorot":
        if weights_file is not None:
            raise MedtransferError(
                "--weights-file is used by the inits 'imagenet' and 'mean_var', not "
                "'glorot'. Drop --weights-file, or pass --init imagenet."
            )
        return
    if not Path(init).expanduser().exists():
        if _looks_like_path(init):
            raise MedtransferError(
                f"--init {init} does not exist{working_directory_note(init)}. A path init is "
                f"an earlier run directory (<logdir>/<experiment>/<run_id>, holding "
                f"{RUN_CONFIG} and {RUN_WEIGHTS}) or a weights file; check the path, or use one "
                f"of the inits {', '.join(INITS)}."
            )
        try:
            look_up_option(init, INITS, "init")
        except MedtransferError as error:
            raise MedtransferError(
                f"{error} An init can also be a path to an earlier run directory or a weights "
                f"file, but '{init}' does not exist."
            ) from None
    if weights_file is not None:
        raise MedtransferError(
            f"--weights-file is used by the inits 'imagenet' and 'mean_var'; with --init "
            f"{init} the weights come from that path. Drop --weights-file."
        )
    if Path(init).expanduser().is_dir():
        run_weights_file(Path(init).expanduser(), spec)


def _looks_like_path(init: str) -> bool:
    return "/" in init or os.sep in init or init.startswith("~") or init.endswith(".h5")


def check_imagenet(spec: NetSpec, weights_file: str | Path | None) -> None:
    """Fails unless ``spec`` has ImageNet weights and ``weights_file``, when given, exists
    (the inits ``imagenet`` and ``mean_var``; also before a download is tried)."""
    if not spec.imagenet:
        with_weights = ", ".join(s.name for s in NETS if s.imagenet)
        raise MedtransferError(
            f"Net '{spec.name}' has no ImageNet weights; only {with_weights} do. Use "
            f"--init glorot, or a path to an earlier run to transfer from another task."
        )
    if weights_file is not None and not Path(weights_file).expanduser().is_file():
        raise MedtransferError(
            f"--weights-file {weights_file} does not exist. Pass the Keras ImageNet file "
            f"'{spec.imagenet_file}' ({spec.imagenet_url}) or a .weights.h5 file saved "
            f"from a '{spec.name}' backbone."
        )


def run_weights_file(run_dir: Path, spec: NetSpec) -> Path:
    """Returns the best weights of an earlier run, after checking it trained the same net."""
    config_file = run_dir / RUN_CONFIG
    weights = run_dir / RUN_WEIGHTS
    if not config_file.is_file():
        raise MedtransferError(
            f"--init {run_dir} is a directory but not a run directory: it has no {RUN_CONFIG}. "
            f"Pass a run directory (tensorboard_logs/<experiment>/<run_id>) or a weights file."
        )
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as error:
        raise MedtransferError(f"{config_file} is not valid YAML: {error}") from None
    saved_net = config.get("net") if isinstance(config, dict) else None
    if saved_net is not None and saved_net != spec.name:
        raise MedtransferError(
            f"Run {run_dir} was saved from net '{saved_net}', not '{spec.name}': its weights "
            f"do not fit. Pass --net {saved_net}, or a run of net '{spec.name}'."
        )
    if not weights.is_file():
        raise MedtransferError(
            f"Run {run_dir} has no {RUN_WEIGHTS}; it may not have finished its first epoch. "
            f"Pass a finished run, or its weights file."
        )
    return weights
