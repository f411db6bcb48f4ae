from __future__ import annotations

import os
import stat

import pytest

from medssl.core.atomic import atomic_path, save_torch_atomic, write_atomic, write_atomic_text


def test_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    dest = tmp_path / "sub" / "a.json"
    write_atomic_text(dest, "old")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(dest, boom)
    assert dest.read_text() == "old"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.json"]  # no temporary left


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = write_atomic_text(tmp_path / "r.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640  # not mkstemp's 0600


def test_temporary_keeps_compound_suffix(tmp_path):
    tmp, dest = atomic_path(tmp_path / "case_0000.nii.gz")
    assert tmp.name.endswith(".nii.gz") and tmp.parent == dest.parent
    tmp.unlink()


def test_exactly_one_writer(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "x")


def test_torch_checkpoint_round_trip(tmp_path):
    import torch

    p = save_torch_atomic({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(p, weights_only=True)["w"], torch.arange(3))
