"""What a newcomer meets first: usage errors, help, --version, Ctrl-C, the printed hints, and
the documented options (README tables against the parsers)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from layouts import write_folder

from medtransfer import __version__
from medtransfer.cli import build_parser, main, tensorboard_command

ROOT = Path(__file__).resolve().parents[1]


def subcommands() -> dict:
    return build_parser().commands()


def run_main(argv, capsys):
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code, err, prog):
    """Exit 2, one usage line, then one paragraph in the style of every other error."""
    assert code == 2, err
    usage, message = err.rstrip("\n").split("\n")
    assert usage.startswith(f"usage: {prog} ") and "[options]" in usage, usage
    assert message.startswith(f"{prog}: error: ")


@pytest.mark.parametrize("command", list(subcommands()))
def test_every_subcommand_suggests_the_flag_meant(command, capsys):
    parser = subcommands()[command]
    flag = max(parser.option_strings(), key=len)
    typo = flag[:-1] + "x" + flag[-1]      # one letter too many, as typed in a hurry
    positionals = [a for a in parser._actions if not a.option_strings]
    code, _, err = run_main([command, *["x"] * len(positionals), typo], capsys)
    assert_usage_error(code, err, f"medtransfer {command}")
    assert f"Unknown option '{typo}'. Did you mean '{flag}'?" in err
    assert f"Run 'medtransfer {command} --help'" in err


def test_config_spelling_of_a_flag_gets_the_dashed_one(capsys):
    code, _, err = run_main(["run", "--image_size", "32"], capsys)
    assert_usage_error(code, err, "medtransfer run")
    assert "Unknown option '--image_size'. Did you mean '--image-size'?" in err
    assert "--head-units" in err     # the valid ones are listed


def test_a_bad_choice_is_one_paragraph_with_a_did_you_mean(capsys):
    code, _, err = run_main(["run", "--scaling", "native2"], capsys)
    assert code == 2
    assert err.splitlines() == [
        "medtransfer run: error: Unknown scaling 'native2'. Did you mean 'native'? Valid "
        "scalings: unit, native. 'medtransfer run --help' explains each."]


def test_a_bad_value_gets_the_one_line_usage(capsys):
    code, _, err = run_main(["run", "--freeze", "abc"], capsys)
    assert_usage_error(code, err, "medtransfer run")
    assert "--freeze: invalid float value: 'abc'" in err


def test_a_top_level_flag_after_the_command_is_explained(capsys):
    code, _, err = run_main(["run", "--verbose"], capsys)
    assert_usage_error(code, err, "medtransfer run")
    assert "'medtransfer --verbose run ...'" in err


def test_a_stray_argument_is_named(capsys):
    code, _, err = run_main(["run", "digits"], capsys)
    assert_usage_error(code, err, "medtransfer run")
    assert "Unexpected argument 'digits'" in err


def test_unknown_command_suggests_one(capsys):
    # ("trian" would now suggest 'pretrain', the closer spelling.)
    code, _, err = run_main(["rnu"], capsys)
    assert_usage_error(code, err, "medtransfer")
    assert "Unknown command 'rnu'. Did you mean 'run'? Valid commands: list, prepare" in err


def test_no_command_prints_the_help_and_exits_2(capsys):
    code, out, err = run_main([], capsys)
    assert code == 2 and out == ""
    assert err.startswith("usage: medtransfer [-h] [--version] [--verbose] command ...")
    for command, parser in subcommands().items():
        assert re.search(rf"^    {command}\b", err, re.MULTILINE), command
        assert parser.description
    assert err.rstrip().splitlines()[-1] == (
        "medtransfer: error: Give a command: " + ", ".join(subcommands()) + ".")


def test_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert (code, out) == (0, f"medtransfer {__version__}\n")


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_run_says_the_same_command_resumes(monkeypatch, capsys, tmp_path,
                                                    digits_data_dir):
    import medtransfer.training.run

    monkeypatch.setattr(medtransfer.training.run, "run_resolved", interrupt)
    code, _, err = run_main(["run", "--logdir", str(tmp_path), "--data-dir",
                             str(digits_data_dir)], capsys)
    assert code == 130
    assert err == ("medtransfer run: interrupted. Every completed epoch is saved in the run "
                   "directory: the same command resumes from the last one (or starts again if "
                   "none had completed).\n")


def test_ctrl_c_in_prepare_says_what_a_rerun_does(monkeypatch, capsys, tmp_path):
    import medtransfer.data.prepare

    monkeypatch.setattr(medtransfer.data.prepare, "prepare_dataset", interrupt)
    code, _, err = run_main(["prepare", "digits", "--out", str(tmp_path / "d")], capsys)
    assert code == 130
    assert err.startswith("medtransfer prepare: interrupted. ")
    assert "the same command prepares it again from the start" in err


def test_list_shows_datasets_prepared_under_a_custom_name(tmp_path, capsys):
    from medtransfer.data.prepare import prepare_dataset

    source = write_folder(tmp_path / "source", classes=("benign", "malignant")).source
    prepare_dataset("folder", source, tmp_path / "datasets" / "mynodules", workers=1,
                    progress=False)
    code, out, _ = run_main(["list", "--data-dir", str(tmp_path / "datasets")], capsys)
    assert code == 0
    section = out.split(f"prepared in {tmp_path / 'datasets'}/", 1)[1]
    row = next(line for line in section.splitlines() if line.strip().startswith("mynodules"))
    # write_folder: 10 images per class, split 8:1:1 in each class.
    assert row.split() == ["mynodules", "folder", "2", "16", "2", "2"]
    assert "classes: benign, malignant" in section


def test_list_says_when_nothing_is_prepared(tmp_path, capsys):
    code, out, _ = run_main(["list", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and f"prepared in {tmp_path}/" in out and "none yet" in out


# --- the TensorBoard hint ----------------------------------------------------------------

def test_tensorboard_hint_uses_tensorboard_on_path(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: f"/somewhere/bin/{name}")
    assert tensorboard_command(Path("logs/demo")) == "tensorboard --logdir logs/demo"


def test_tensorboard_hint_falls_back_to_the_venv_relative_when_inside(monkeypatch, tmp_path):
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "tensorboard").write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(sys, "prefix", str(venv))
    assert tensorboard_command(Path("logs/demo")) == ".venv/bin/tensorboard --logdir logs/demo"
    # From elsewhere, absolute paths: what works wherever the user stands.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert tensorboard_command(tmp_path / "logs" / "my demo") == (
        f"{venv}/bin/tensorboard --logdir '{tmp_path}/logs/my demo'")


def test_tensorboard_hint_without_the_script_uses_python_m(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "no_venv"))
    expected = f"{os.path.abspath(sys.executable)} -m tensorboard.main --logdir logs"
    assert tensorboard_command(Path("logs")) == expected


# --- documented options ------------------------------------------------------------------

def documented_flags(text: str) -> set[str]:
    """The flags in the first column of a markdown options table."""
    flags = set()
    for line in text.splitlines():
        if not line.startswith("| `--"):
            continue
        first = line.split("|")[1]
        for both in re.findall(r"--\[no-\]([\w-]+)", first):
            flags |= {f"--{both}", f"--no-{both}"}
        flags |= set(re.findall(r"(?<![\w\]-])--[a-z][\w-]*", first))
    return flags


def sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^(#+ .*)$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


#: The pages a user reads: the README and every page of docs/ it links to.
DOCUMENTS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))


def readme_option_tables() -> list[tuple[str, str, str]]:
    found = [("datasets/README.md", "## Options common to every dataset", "prepare")]
    for name in DOCUMENTS:
        for heading, body in sections((ROOT / name).read_text()):
            match = re.search(r"`medtransfer ([\w-]+)", heading)
            if match and "| option |" in body:
                found.append((name, heading, match.group(1)))
    return found


@pytest.mark.parametrize("file,heading,command", readme_option_tables())
def test_the_options_table_lists_every_flag_of_the_parser(file, heading, command):
    body = dict(sections((ROOT / file).read_text()))[heading]
    parser = subcommands()[command]
    in_parser = set(parser.option_strings())
    in_table = documented_flags(body.split("| option |", 1)[1])
    assert in_parser - in_table == set(), f"{file}, {heading}: undocumented flags"
    assert in_table - in_parser == set(), f"{file}, {heading}: documented but not in the parser"


def test_the_commands_page_has_the_run_options_table():
    assert ("docs/commands.md", "## `medtransfer run`: one configuration, trained, evaluated "
            "and logged", "run") in readme_option_tables()


def test_another_max_reject_changes_no_data_and_says_so(tmp_path, capsys):
    source = write_folder(tmp_path / "source").source
    args = ["prepare", "folder", "--source", str(source), "--out", str(tmp_path / "out"),
            "--workers", "1", "--no-progress"]
    assert run_main(args, capsys)[0] == 0
    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    code, out, err = run_main([*args, "--max-reject", "0.2"], capsys)
    assert code == 0
    assert "nothing to do (--max-reject 0.2 differs from the 0.01 it was prepared with" in (
        out + err)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == manifest


INTERRUPT_HOOK = Path(__file__).parent / "interrupt_at"
CONSOLE_SCRIPT = "import sys; from medtransfer.__main__ import main; sys.exit(main())"


@pytest.mark.parametrize("entry", ["-m", "console script"])
@pytest.mark.parametrize("at, command, said", [
    ("medtransfer.cli", ["list"], "medtransfer: interrupted."),  # the first import
    ("medtransfer.errors", ["list"], "medtransfer: interrupted."),  # one within it
    ("tensorflow", ["run", "--dataset", "digits"], "medtransfer run: interrupted. "),
    ("exit", ["list"], "medtransfer: interrupted."),  # after the command returned
])
def test_ctrl_c_at_any_moment_exits_130_without_a_traceback(entry, at, command, said,
                                                            tmp_path):
    import subprocess

    root = Path(__file__).parent.parent
    start = ["-m", "medtransfer"] if entry == "-m" else ["-c", CONSOLE_SCRIPT]
    env = {**os.environ, "MEDTRANSFER_TEST_SIGINT_AT": at,
           "PYTHONPATH": os.pathsep.join([str(INTERRUPT_HOOK), str(root)])}
    done = subprocess.run(
        [sys.executable, *start, *command, "--data-dir", str(tmp_path / "data"),
         *(["--logdir", str(tmp_path / "logs")] if command[0] == "run" else [])],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert said in done.stderr
