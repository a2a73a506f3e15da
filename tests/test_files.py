"""kdedge.files: one atomic-write helper for files (`atomic_path`) and one for directories (`commit_dir`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kdedge import files


def _visible(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def test_atomic_path_renames_a_complete_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "logits.npz"
    with files.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".npz"
        np.savez(tmp, a=np.arange(3))  # numpy keeps a name that ends in .npz as it is
    with np.load(target) as arrays:
        assert arrays["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["logits.npz"]


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "results.md"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk"):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]


def test_write_json_atomic_and_fsync_of_a_directory(tmp_path):
    files.write_json_atomic(tmp_path / "state.json", {"version": "新"})
    assert json.loads((tmp_path / "state.json").read_text(encoding="utf-8")) == {"version": "新"}
    files.fsync_path(tmp_path)  # directories can be flushed too
    assert _visible(tmp_path) == ["state.json"] == [p.name for p in tmp_path.iterdir()]


def test_commit_dir_replaces_only_what_the_listing_accepts(tmp_path):
    out = tmp_path / "run"
    for version in ("old", "new"):
        tmp = files.staging_dir(out, force=True)
        (tmp / "predictions").mkdir()
        (tmp / "predictions" / "val_kd.npy").write_text(version)
        (tmp / "metrics.json").write_text(version)
        files.commit_dir(tmp, out)
        assert (out / "metrics.json").read_text() == version == (out / "predictions" / "val_kd.npy").read_text()
    assert _visible(tmp_path) == ["run"] == [p.name for p in tmp_path.iterdir()]
    tmp = files.staging_dir(out, force=True)
    (out / "notes.txt").write_text("mine")  # appeared while the new run was being written
    with pytest.raises(FileExistsError, match="not a kdedge run directory: it holds notes.txt"):
        files.commit_dir(tmp, out)
    assert (out / "notes.txt").read_text() == "mine"
