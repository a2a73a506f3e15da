"""What kdedge reads back from a run directory, and where it may write: a link out of the run, a FIFO, an
edited label order or a truncated model is one clear error naming the file; --out checks never walk a tree
and never stage inside the destination (issue 30)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_corpus, write_jsonl
from kdedge.errors import OutputExistsError, ReadBackError
from kdedge.files import check_replaceable, read_regular_file, run_listing

KDEDGE = [sys.executable, "-m", "kdedge.cli"]


# --- paths: decided without walking, never staged inside the destination -------------------------------------

@pytest.mark.parametrize("where", ["/", "~", ".", ".."])
def test_an_out_that_holds_the_caller_is_refused_at_once(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(OutputExistsError, match="--out must name a new directory"):
        check_replaceable(Path(os.path.expanduser(where)), True, run_listing, "a kdedge run directory")
    assert time.monotonic() - start < 1


def test_a_full_directory_is_refused_without_reading_all_of_it(tmp_path):
    big = tmp_path / "big"
    for i in range(50):
        (big / f"d{i:02d}").mkdir(parents=True)
        for j in range(100):
            (big / f"d{i:02d}" / f"f{j}").touch()
    seen = []
    with pytest.raises(OutputExistsError, match="and more") as err:
        check_replaceable(big, True, lambda path: (lambda rel: seen.append(rel) or False), "a kdedge run directory")
    assert "d00/f0" in str(err.value) and len(seen) == 4  # stopped at the 4th foreign file of 5,000


def test_out_dot_in_an_empty_directory_is_one_clear_error(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", make_corpus(40))
    here = tmp_path / "empty"
    here.mkdir()
    for command in (["train", "--data", data, "--out", ".", "--force", "-q"],
                    ["export", str(tmp_path / "no-run"), "--out", ".", "--force"]):
        proc = subprocess.run(KDEDGE + command, capture_output=True, text=True, cwd=here, timeout=300)
        assert proc.returncode == 2 and "is the current directory" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and os.listdir(here) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "f.json")
    start = time.monotonic()
    with pytest.raises(ReadBackError, match="not a regular file"):
        read_regular_file(tmp_path / "f.json", 1 << 20)
    assert time.monotonic() - start < 1


def test_a_side_file_of_many_unknown_labels_gives_a_short_message(tmp_path):
    from kdedge.text.data import DataError, read_label_descriptions

    path = tmp_path / "desc.json"
    path.write_text(json.dumps({f"未知标签{i}\x1b]0;title\x07": "x" for i in range(50_000)}), encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_label_descriptions(path, ["甲", "乙"])
    message = str(err.value)
    assert len(message) < 2_000 and "and 49,990 more" in message and "\x1b" not in message


def test_a_split_far_from_the_share_asked_says_so(tmp_path):
    rows = [{"text": f"文本{i}", "labels": ["甲" if i % 2 else "乙"], "doc": f"g{i % 3}"} for i in range(60)]
    data = write_jsonl(tmp_path / "g.jsonl", rows)
    proc = subprocess.run(KDEDGE + ["data", "split", data, "--group-by", "doc", "--out", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "holds 33.3% of the texts, not the 10% asked" in proc.stderr, proc.stderr


# --- run directories: export trusts nothing it reads ---------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained by the real pipeline (both students, so metrics.json records both)."""
    from kdedge.config import TrainConfig
    from kdedge.training.train import train_run

    root = tmp_path_factory.mktemp("runs")
    data = write_jsonl(root / "d.jsonl", make_corpus(90))
    cfg = TrainConfig(arch="textcnn", mode="all", epochs=2, embedding_dim=8, max_len=24, w2v_epochs=1,
                      batch_size=16, arch_params={"filters": 8, "kernel_sizes": [2, 3]})
    train_run(cfg, data, str(root / "run"), progress=False)
    return root / "run"


def damaged_copy(run: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    change(copy)
    return copy


def _link_vocab_outside(run: Path) -> None:
    outside = run.parent / "outside_vocab.txt"
    (run / "vocab.txt").rename(outside)
    (run / "vocab.txt").symlink_to(outside)


def _fifo_config(run: Path) -> None:
    (run / "config.json").unlink()
    os.mkfifo(run / "config.json")


def _reverse_labels(run: Path, files=("config.json",)) -> None:
    for name in files:
        record = json.loads((run / name).read_text(encoding="utf-8"))
        record["labels"] = record["labels"][::-1]
        (run / name).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")


def _npy_header(run: Path, header: bytes) -> None:
    for path in (run / "predictions").glob("val_*.npy"):
        path.write_bytes(header)


RUN_DAMAGES = {
    "predictions .npy empty": (lambda run: _npy_header(run, b""), "val_.*npy: cannot read"),
    "predictions .npy header with an unclosed bracket (found by fuzzing: numpy's tokenize.TokenError)": (
        lambda run: _npy_header(run, b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, 'shape': "
                                     b"(8,\x05 3 }" + b" " * 59 + b"\n" + b"\x00" * 96), "val_.*npy: cannot read"),
    "vocab.txt a link out of the run": (_link_vocab_outside, "vocab.txt: a symbolic link"),
    "config.json a FIFO": (_fifo_config, "config.json: not a regular file"),
    "labels reversed in config.json": (_reverse_labels, "labels differ from metrics.json"),
    "labels reversed in config.json and metrics.json": (
        lambda run: _reverse_labels(run, ("config.json", "metrics.json")), "do not match what training recorded"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(RUN_DAMAGES))
def test_export_refuses_a_run_it_cannot_trust(run, tmp_path, damage):
    from kdedge_export import RunDirectoryError
    from kdedge_export.run import load_run

    change, words = RUN_DAMAGES[damage]
    copy = damaged_copy(run, tmp_path, change)
    start = time.monotonic()
    with pytest.raises(RunDirectoryError, match=words):
        load_run(copy)
    assert time.monotonic() - start < 30
    load_run(run)  # the intact run still loads


@pytest.mark.slow
def test_a_truncated_model_is_named_as_such_not_as_missing(run, tmp_path):
    from kdedge_export import RunDirectoryError
    from kdedge_export.run import load_keras, load_run

    def truncate(copy):
        for model in copy.glob("*.keras"):
            model.write_bytes(model.read_bytes()[:5000])
    copy = damaged_copy(run, tmp_path, truncate)
    with pytest.raises(RunDirectoryError, match="not a complete Keras archive"):
        load_keras(load_run(copy))


@pytest.mark.slow
def test_huge_logits_are_judged_without_an_overflow_warning(run, tmp_path):
    """Validation logits of ±1e30 (found by the run-directory fuzz target): refused as not what training recorded,
    with no `RuntimeWarning: overflow encountered in exp` on stderr (issue 30)."""
    import warnings

    import numpy as np

    from kdedge_export import RunDirectoryError
    from kdedge_export.run import load_run

    def huge(copy):
        for path in (copy / "predictions").glob("val_*.npy"):
            logits = np.load(path)
            np.save(path, np.where(logits >= 0, 1e30, -1e30).astype(logits.dtype) * -1)  # every decision flipped
    copy = damaged_copy(run, tmp_path, huge)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RunDirectoryError, match="do not match what training recorded"):
            load_run(copy)
