"""TensorBoard compares a grid: the real server reads two experiments back through its API.

The same run id in two experiments must stay two sessions in the HParams tab, each with
its best validation AUC and test AUC (metrics.json's values) as metrics. Every identity
field is a hyperparameter of one type, so runs that differ in train_size, classes or lr
differ in a typed column.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from medtransfer.config import FIELDS, NOT_IDENTITY, RunConfig
from medtransfer.training.run import run_experiment
from medtransfer.training.rundir import RunDirectory, TensorBoardLog

SERVER_TIMEOUT = 180  # seconds for the server to start and load the runs, on a busy machine


@pytest.fixture(scope="module")
def two_experiments(tmp_path_factory, digits_data_dir):
    """A real run in experiment "first"; the same run id in "second", written by the same
    TensorBoardLog calls a run makes, with other numbers."""
    root = tmp_path_factory.mktemp("tensorboard")
    config = RunConfig(dataset="digits", net="small_cnn", epochs="0+2", image_size=16,
                       batch_size=64, lr=1e-3, train_size=128, experiment="first",
                       logdir=str(root), data_dir=str(digits_data_dir))
    first = run_experiment(config)
    second = RunDirectory(root / "second" / first.run_dir.name)
    second.create()
    metrics = {**first.metrics, "best_epoch": 1, "val_auc_micro_best": 0.625,
               "test_auc_micro": 0.75, "test_auc_macro": 0.7, "test_accuracy": 0.5}
    log = TensorBoardLog(second.path)
    log.write_hparams(config.replace(experiment="second").to_dict(), train_images=128)
    log.write_epoch({"epoch": 1, "val_auc_micro": 0.625})
    log.write_results(metrics)
    second.write_metrics(metrics)
    return root, {"first": first.metrics, "second": metrics}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(two_experiments, tmp_path_factory):
    root, _ = two_experiments
    port = free_port()
    log = (tmp_path_factory.mktemp("tensorboard_server") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host",
         "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    yield f"http://127.0.0.1:{port}", process, log.name
    process.terminate()
    process.wait(timeout=30)
    log.close()


def request(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(base + path, data=data, headers=headers),
                                timeout=30) as response:
        return json.loads(response.read())


def poll(server, path, body, ready):
    """Asks until ``ready(answer)`` holds: the server starts, then loads runs, at its pace."""
    base, process, log = server
    deadline = time.monotonic() + SERVER_TIMEOUT
    answer = None
    while time.monotonic() < deadline:
        assert process.poll() is None, open(log).read()
        try:
            answer = request(base, path, body)
            if ready(answer):
                return answer
        except urllib.error.HTTPError:
            raise  # the server answered: a wrong request, not a slow server
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard never answered {path} as expected; last: {answer}")


def metric(group, tag):
    return next((item["value"] for item in group["metricValues"]
                 if item["name"]["tag"] == tag and item["name"].get("group", "") == ""), None)


@pytest.mark.slow
def test_hparams_tab_shows_each_experiments_run_with_its_test_auc(two_experiments, server):
    _, results = two_experiments
    run_id = results["first"]["run_id"]

    body = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
            "colParams": [], "startIndex": 0, "sliceSize": 100}
    answer = poll(server, "/data/plugin/hparams/session_groups", body,
                  lambda a: sum(len(g["sessions"]) for g in a.get("sessionGroups", [])) == 2
                  and all(metric(g, "test/auc_micro") is not None for g in a["sessionGroups"]))
    groups = {group["name"]: group for group in answer["sessionGroups"]}
    assert set(groups) == {f"first/{run_id}", f"second/{run_id}"}
    for experiment, metrics in results.items():
        group = groups[f"{experiment}/{run_id}"]
        assert [session["name"] for session in group["sessions"]] == [f"{experiment}/{run_id}"]
        assert group["hparams"]["net"] == "small_cnn"
        assert group["hparams"]["train_size"] == 128 and group["hparams"]["classes"] == "all"
        # Scalars are float32 in event files.
        assert metric(group, "test/auc_micro") == pytest.approx(
            metrics["test_auc_micro"], abs=1e-6)
        assert metric(group, "best/val_auc_micro") == pytest.approx(
            metrics["val_auc_micro_best"], abs=1e-6)
        assert metric(group, "test/accuracy") == pytest.approx(
            metrics["test_accuracy"], abs=1e-6)

    experiment = request(server[0], "/data/plugin/hparams/experiment", {"experimentName": ""})
    tags = {item["name"]["tag"] for item in experiment["metricInfos"]}
    assert {"best/val_auc_micro", "test/auc_micro", "test/auc_macro", "test/accuracy"} <= tags

    metrics = results["first"]
    # Run ids hold '+' (e0+2): the query must be encoded.
    query = urllib.parse.urlencode({"run": f"first/{run_id}", "tag": "test/auc_micro"})
    points = request(server[0], f"/data/plugin/scalars/scalars?{query}")
    assert [(step, pytest.approx(value, abs=1e-6)) for _, step, value in points] == [
        (metrics["best_epoch"], metrics["test_auc_micro"])]


def hparams_contents(run_dirs):
    """What TensorBoard's HParams plugin reads from each run: tag -> plugin content."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    contents = {}
    for run_dir in run_dirs:
        tags = {}
        for events in sorted(run_dir.glob("events.out.tfevents.*")):
            for event in EventFileLoader(str(events)).Load():
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == "hparams":
                        tags[value.tag] = value.metadata.plugin_data.content
        contents[run_dir.name] = tags
    return contents


def test_every_identity_field_that_differs_is_a_typed_column(tmp_path):
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams.backend_context import Context

    # A data-size pair: 20 images of five classes, and the whole split of every class.
    base = RunConfig(dataset="digits", net="small_cnn", epochs="0+2", lr=5e-4, image_size=16,
                     flips=True, noise=False, color=False, logdir=str(tmp_path))
    configs = {"small": (base.replace(train_size=20, classes=("5", "6", "7", "8", "9"),
                                      lr=1e-3), 20),
               "whole": (base, 1438)}
    for name, (config, train_images) in configs.items():
        log = TensorBoardLog(tmp_path / name)
        log.write_hparams(config.to_dict(), train_images=train_images)
        log.close()
    contents = hparams_contents([tmp_path / name for name in configs])
    context = Context(None)
    # No run declares the experiment: TensorBoard would take one run's as everyone's.
    assert context._find_experiment_tag(contents, include_metrics=False) is None
    infos = {info.name: info for info in context._compute_hparam_infos(contents)}
    identity = {name for name in FIELDS if name not in NOT_IDENTITY}
    # patience: unset in both, so no value rather than "None"; findings and any_finding
    # belong to multi-label datasets, and digits is single-label.
    assert set(infos) == identity - {"patience", "findings", "any_finding"}
    differs = {name for name, info in infos.items() if info.differs}
    assert differs == {"train_size", "classes", "lr"}
    assert infos["train_size"].type == api_pb2.DATA_TYPE_FLOAT64
    assert (infos["train_size"].domain_interval.min_value,
            infos["train_size"].domain_interval.max_value) == (20, 1438)
    assert infos["lr"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["classes"].type == api_pb2.DATA_TYPE_STRING
    assert sorted(infos["classes"].domain_discrete) == ["5,6,7,8,9", "all"]
    assert infos["augment"].type == api_pb2.DATA_TYPE_BOOL
    assert infos["dataset"].type == api_pb2.DATA_TYPE_STRING
