"""Start-up: `list`, every `--help` and a run refused for a misspelt name load no
TensorFlow, and TensorFlow's start-up noise is hidden while its real messages still reach
the user.

The commands run as real subprocesses without ``TF_CPP_MIN_LOG_LEVEL`` (conftest sets it for
this process, and a user's own value turns the filter off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medtransfer.quiet import (
    NO_GPU_NOISE,
    START_UP_NOISE,
    filtered_stderr,
    quiet_tensorflow_start,
    wants_tensorflow_messages,
)

# What TensorFlow 2.21 prints at start-up on a CPU machine, in words a user would search for.
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub",
         "failed call to cuInit")
HEAVY = ("tensorflow", "keras", "pandas")


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env={**environment, **env})


def test_list_help_a_sweep_plan_and_a_misspelt_run_load_no_tensorflow(tmp_path):
    # A sweep process only plans and launches: each run's own process imports TensorFlow.
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"experiment: sw\nbase: {{logdir: {str(tmp_path / 'logs')!r}, "
                     "epochs: 0+1}\ngrid: {seed: [0, 1]}\n")
    code = f"""
import json, sys
from medtransfer.cli import build_parser, main
commands = list(build_parser().commands())
answers = {{}}
listing = ["list", "--data-dir", {str(tmp_path)!r}]
for argv in [["--help"], *([c, "--help"] for c in commands), listing]:
    try:
        answers[" ".join(argv)] = main(argv)
    except SystemExit as exit_:
        answers[" ".join(argv)] = exit_.code
loaded = [m for m in {HEAVY!r} if m in sys.modules]
planned = main(["sweep", {str(sweep)!r}, "--dry-run"])
swept = [m for m in {HEAVY!r} if m in sys.modules]
refused = [main(["run", *argv, "--data-dir", {str(tmp_path)!r}, "--logdir", "logs"])
           for argv in (["--net", "resnet50v2"], ["--dataset", "canser"])]
print(json.dumps({{"answers": answers, "loaded": loaded, "planned": planned,
                  "sweep": swept, "refused": refused,
                  "after_refusals": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    done = python(code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert set(result["answers"].values()) == {0} and len(result["answers"]) >= 5
    assert result["loaded"] == []
    assert result["planned"] == 0 and result["sweep"] == ["pandas"]
    # A misspelt net or dataset is refused before TensorFlow loads, so at once.
    assert result["refused"] == [2, 2] and result["after_refusals"] == ["pandas"]
    # stderr holds the two refusals and nothing else (no start-up noise, no warning).
    refusals = done.stderr.splitlines()
    assert [line.split(": error: ")[0] for line in refusals] == ["medtransfer run"] * 2
    assert "Unknown net 'resnet50v2'" in refusals[0]
    assert "Unknown dataset 'canser'" in refusals[1]


def test_the_filter_drops_only_the_known_lines(capfd):
    real = b"W0000 00:00:1795438582.106918   13168 port.cc:148] TF_ENABLE_ONEDNN_OPTS is not set\n"
    lines = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        b"I0000 00:00:1795438245.479512    4226 port.cc:153] oneDNN custom operations are on. "
        b"You may see slightly different numerical results.\n",
        real,
        b"I0000 00:00:1795438245.482089    4226 cudart_stub.cc:31] Could not find cuda drivers "
        b"on your machine, GPU will not be used.\n",
        b"E0000 00:00:1795438259.741422    4269 cuda_platform.cc:52] failed call to cuInit: "
        b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
        b"E0000 00:00:1795438259.741422    4269 cuda_platform.cc:52] failed call to cuInit: "
        b"CUDA_ERROR_OUT_OF_MEMORY\n",                     # a real driver problem: kept
        b"Traceback: something else entirely, without a newline",
    ]
    capfd.readouterr()
    with filtered_stderr(START_UP_NOISE + NO_GPU_NOISE):
        for line in lines:
            os.write(2, line)
    os.write(2, b"after\n")
    err = capfd.readouterr().err.encode()
    assert err == (real + lines[5] + lines[6] + b"after\n")


def test_verbose_and_own_log_level_leave_tensorflow_alone(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("MEDTRANSFER_VERBOSE", raising=False)
    assert not wants_tensorflow_messages()
    assert wants_tensorflow_messages(verbose=True)
    monkeypatch.setenv("MEDTRANSFER_VERBOSE", "1")
    assert wants_tensorflow_messages()
    monkeypatch.setenv("MEDTRANSFER_VERBOSE", "0")
    assert not wants_tensorflow_messages()
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert wants_tensorflow_messages()
    # Then quiet_tensorflow_start changes nothing: no filter, the user's level kept.
    before = list(sys.meta_path)
    quiet_tensorflow_start()
    assert sys.meta_path == before and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, digits_data_dir):
    """A real `run` as a user starts it, plus a deliberate TensorFlow warning at start-up:
    an invalid TF_ENABLE_ONEDNN_OPTS, logged from C++ in the middle of the noise."""
    root = tmp_path_factory.mktemp("quiet")
    code = ("from medtransfer.cli import main; raise SystemExit(main(['run', '--epochs', "
            "'0+1', '--image-size', '16', '--batch-size', '64', '--train-size', '100', "
            f"'--data-dir', {str(digits_data_dir)!r}, '--logdir', {str(root)!r}]))")
    return python(code, TF_ENABLE_ONEDNN_OPTS="maybe")


def test_a_run_shows_no_start_up_noise_but_real_tensorflow_messages(tiny_run):
    assert tiny_run.returncode == 0, tiny_run.stderr
    assert "test AUC (micro)" in tiny_run.stdout
    for words in NOISE:
        assert words not in tiny_run.stderr + tiny_run.stdout, words
    assert "TF_ENABLE_ONEDNN_OPTS is not set to either '0', 'false', '1', or 'true'" in (
        tiny_run.stderr)


def test_a_child_inherits_our_log_level_without_taking_it_for_the_users(monkeypatch):
    """A sweep's runs inherit the TF_CPP_MIN_LOG_LEVEL the sweep set: they stay quiet,
    while a level the user set (no marker, or another value) still means 'show it all'."""
    from medtransfer import quiet

    monkeypatch.setattr(quiet, "_we_set_log_level", False)
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    monkeypatch.setenv(quiet.TF_LOG_LEVEL_ENV, "2")
    monkeypatch.setenv(quiet._OURS_ENV, "2")
    assert not quiet.wants_tensorflow_messages()
    monkeypatch.setenv(quiet.TF_LOG_LEVEL_ENV, "0")
    assert quiet.wants_tensorflow_messages()
    monkeypatch.delenv(quiet._OURS_ENV)
    monkeypatch.setenv(quiet.TF_LOG_LEVEL_ENV, "2")
    assert quiet.wants_tensorflow_messages()


def test_verbose_on_the_command_line_holds_when_the_api_loads_after_it():
    # The API module quiets TensorFlow for notebooks; the CLI's --verbose came first and wins.
    code = ("import sys; from medtransfer import quiet; "
            "quiet.quiet_tensorflow_start(verbose=True); import medtransfer.api; "
            "print(any(type(f).__name__ == '_QuietImport' for f in sys.meta_path))")
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
