"""Atomic writes: a failed write leaves the old file and no temp file behind."""

from __future__ import annotations

import pytest

from pgolf.io import atomic_open, atomic_write_bytes, atomic_write_text


def test_write_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "twö")
    assert path.read_text(encoding="utf-8") == "twö"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_failure_keeps_old_file_and_cleans_temp(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"half of the new con")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_failure_without_old_file_leaves_nothing(tmp_path):
    path = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as f:
        f.write(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_temp_file_lives_beside_target(tmp_path):
    path = tmp_path / "f.bin"
    with atomic_open(path) as f:
        f.write(b"data")
        temps = [p for p in tmp_path.iterdir() if p.name != "f.bin"]
        assert len(temps) == 1 and temps[0].name.startswith(".f.bin.")
        assert not path.exists()  # nothing visible until the rename
    assert path.read_bytes() == b"data"
