"""Atomic writes: whole or not at all, with the permissions a plain write gives."""

import os
import stat

import pytest

from medtransfer.fileio import read_json, write_json_atomic


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_respects_the_umask_like_a_plain_write(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "metrics.json", {"status": "complete"})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    assert read_json(tmp_path / "metrics.json") == {"status": "complete"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_replacing_a_file_keeps_no_stricter_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "manifest.json", {"a": 1})
        write_json_atomic(tmp_path / "manifest.json", {"a": 2})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == 0o644
    assert read_json(tmp_path / "manifest.json") == {"a": 2}
