"""`kdedge cv --engine ray`: each (fold, architecture) as a task on a real local Ray cluster writes the
fold files the local path writes, and resumes the same way."""
from __future__ import annotations

import json

import pytest

from conftest import assert_same_results, require_extra, without_timings
from kdedge.config import make_config
from kdedge.cv import run_cv
from test_cv import TINY

ray = require_extra("ray", "ray")
pytestmark = pytest.mark.slow  # a local Ray instance


def _folds(out):
    return {p.name: without_timings(json.loads(p.read_text(encoding="utf-8")))
            for p in sorted((out / "folds").glob("*.json"))}


def test_ray_engine_writes_the_local_paths_fold_files_and_resumes(corpus_file, tmp_path):
    cfg = make_config(TINY)
    run_cv(cfg, corpus_file, str(tmp_path / "local"), folds=2, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        run_cv(cfg, corpus_file, str(out), folds=2, progress=False, engine="ray")
        expected = _folds(tmp_path / "local")
        assert sorted(expected) == ["fold0_baselines.json", "fold0_textcnn.json", "fold1_baselines.json",
                                    "fold1_textcnn.json"]
        assert_same_results(_folds(out), expected)
        kept = (out / "folds" / "fold0_textcnn.json").stat().st_mtime_ns
        (out / "folds" / "fold1_textcnn.json").unlink()  # killed before that fold finished
        run_cv(cfg, corpus_file, str(out), folds=2, progress=False, engine="ray")
        assert (out / "folds" / "fold0_textcnn.json").stat().st_mtime_ns == kept  # finished folds are not rerun
        assert_same_results(_folds(out), expected)
        assert json.loads((out / "results.json").read_text(encoding="utf-8"))["architectures"]["textcnn"]["kd"]["folds"] == [0, 1]
    finally:
        ray.shutdown()


def test_engine_options_are_checked(corpus_file, tmp_path):
    with pytest.raises(ValueError, match="--address names a Ray cluster"):
        run_cv(make_config(TINY), corpus_file, str(tmp_path / "a"), folds=2, address="auto")
    with pytest.raises(ValueError, match="with --engine ray the cluster's CPUs decide"):
        run_cv(make_config(TINY), corpus_file, str(tmp_path / "b"), folds=2, engine="ray", jobs=2)
