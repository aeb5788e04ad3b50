"""Atomic writes: the target is replaced whole or not at all, and a disk that fills up is said in words.

The disk-full cases write into a real 2 MiB tmpfs (the small_disk fixture), the way a checkpoint write
fails on a full CI disk: torch.save's own error there reads "[enforce fail at inline_container.cc:672] .
unexpected pos", which names neither the disk nor the fix.
"""

from __future__ import annotations

import errno
import shutil

import pytest
import torch

from deghost.files import DiskFullError, atomic_write, atomic_write_bytes, temporary_target
from deghost.training.resume import atomic_save
from tests.helpers.small_disk import SMALL_DISK_BYTES


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = atomic_write_bytes(tmp_path / "manifest.json", b"old")

    def broken(file):
        file.write(b"half of the new")
        raise ValueError("the writer broke")

    with pytest.raises(ValueError, match="the writer broke"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failure_that_also_removed_the_folder_is_raised_as_it_is(tmp_path):
    folder = tmp_path / "run"

    def remove_the_folder_then_fail(file):
        shutil.rmtree(folder)
        raise ValueError("stopped")

    with pytest.raises(ValueError, match="stopped"):
        atomic_write(folder / "weights.pt", remove_the_folder_then_fail)


def test_bytes_that_do_not_fit_raise_a_disk_full_error_naming_the_file_and_the_fix(small_disk):
    target = atomic_write_bytes(small_disk / "image.png", b"old")
    with pytest.raises(DiskFullError) as caught:
        atomic_write_bytes(target, bytes(3 << 20))
    error = caught.value
    assert error.errno == errno.ENOSPC and error.filename == str(target)
    assert "no space left on the disk holding" in str(error) and "image.png" in str(error)
    assert "df -h" in str(error) and "another disk" in str(error)
    assert target.read_bytes() == b"old"
    assert [p.name for p in small_disk.iterdir()] == ["image.png"]
    assert shutil.disk_usage(small_disk).free > SMALL_DISK_BYTES // 2  # the partial temporary file was removed


def test_a_checkpoint_too_big_for_the_disk_says_so_instead_of_torchs_unexpected_pos(small_disk):
    weights = {"weight": torch.ones(1 << 20)}  # 4 MB of float32 on a 2 MiB disk
    with pytest.raises(DiskFullError, match=r"writing checkpoint-00000001\.pt stopped after") as caught:
        atomic_save(weights, small_disk / "checkpoint-00000001.pt")
    assert caught.value.__cause__ is not None  # the writer's own error is kept for whoever debugs it
    assert list(small_disk.iterdir()) == []
    small = atomic_save({"weight": torch.ones(16)}, small_disk / "checkpoint-00000001.pt")
    torch.testing.assert_close(torch.load(small, weights_only=True)["weight"], torch.ones(16))


def test_the_temporary_file_a_write_leaves_names_its_target(tmp_path):
    """A killed writer's leftover is found by its name (deghost edit --ray removes them so), whatever the target's
    own name holds: dots, signs, a suffix that looks like a temporary one."""
    for i, name in enumerate(("face_smile+20_network.png", "a.b.0123abcd.tmp.png", "x")):
        target = tmp_path / str(i) / name
        seen: list = []
        atomic_write(target, lambda file, folder=target.parent, seen=seen: seen.extend(folder.iterdir()))
        assert len(seen) == 1 and seen[0].name.startswith(f".{name}.") and temporary_target(seen[0]) == target
        assert [path.name for path in target.parent.iterdir()] == [name]
    for other in ("face.png", ".face.png.tmp", ".face.png.notahex!.tmp", "face.png.0123abcd.tmp"):
        assert temporary_target(tmp_path / other) is None
