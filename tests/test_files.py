"""symbuilder.files.write_atomic: the one writer's guarantees, checked on the real file system."""
from __future__ import annotations

import os
import stat

import pytest

from symbuilder.files import write_atomic


def _leftovers(folder) -> list:
    return sorted(n for n in os.listdir(folder) if ".tmp-" in n)


def test_a_successful_write_replaces_the_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    write_atomic(str(path), b"new bytes")
    assert path.read_bytes() == b"new bytes"
    assert _leftovers(tmp_path) == []


def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(str(path), half_then_fail)
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_of_a_new_file_leaves_nothing(tmp_path):
    path = tmp_path / "new.bin"
    with pytest.raises(TypeError):  # not bytes-like: the write fails inside the open file
        write_atomic(str(path), 12345)  # type: ignore[arg-type]
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_a_callable_writer_gets_a_path_beside_the_target(tmp_path):
    seen = []

    def writer(tmp: str) -> None:
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("x")

    write_atomic(str(tmp_path / "sub" / "a.params"), writer)
    assert os.path.dirname(seen[0]) == str(tmp_path / "sub")  # same file system: one rename
    assert (tmp_path / "sub" / "a.params").read_text() == "x"


@pytest.mark.parametrize("name", ["n" * 255, "é" * 125 + ".json"])
def test_a_name_at_the_file_systems_limit_still_gets_a_temporary_name(tmp_path, name):
    # The temporary name is longer than the target's: cut, not ENAMETOOLONG.
    write_atomic(str(tmp_path / name), b"x")
    assert (tmp_path / name).read_bytes() == b"x"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_atomic(str(tmp_path / "f"), b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o666 & ~mask


def test_deferred_sync_skips_only_inside_its_block(tmp_path, monkeypatch):
    """Inside deferred_sync() write_atomic makes no fsync (the caller flushes the files
    together); outside, one of the file and one of its folder, as before."""
    import symbuilder.files as files
    synced = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd))
    with files.deferred_sync():
        files.write_atomic(str(tmp_path / "a"), b"1")
        assert synced == []
    files.write_atomic(str(tmp_path / "b"), b"2")
    assert len(synced) == 2
    assert (tmp_path / "a").read_bytes() == b"1" and (tmp_path / "b").read_bytes() == b"2"
