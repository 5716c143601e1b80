"""Sweep files for the sweep tests: tiny digits runs under the test's own folder."""

import yaml


def sweep_file(tmp_path, digits_data_dir, grid, experiment="sw", epochs="0+1"):
    """Writes ``<tmp_path>/<experiment>.yaml`` with ``grid`` over 40-image digits runs."""
    path = tmp_path / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": experiment,
        "base": {"dataset": "digits", "image_size": 16, "batch_size": 64, "epochs": epochs,
                 "train_size": 40, "data_dir": str(digits_data_dir),
                 "logdir": str(tmp_path / "logs")},
        "grid": grid,
        "expect": "ignored by the sweep",
    }))
    return path
