"""`kdedge cv`: the teacher cache (student-only settings reuse a fold's teacher) and the KD (alpha, T) search."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kdedge.config import make_config
from kdedge.crossval.cv import run_cv, usable_cores

# one teacher kind: `auto` may add the towers to the linear teacher, depending on the plain student it is
# compared with, and these tests are about the cache
TINY = {"embedding_dim": 16, "w2v_epochs": 1, "segmenter": "char", "batch_size": 16, "epochs": 2, "patience": 2,
        "max_len": 16, "arch_params": {"filters": 8}, "teacher": "linear"}


def _fold(out, k=0) -> dict:
    return json.loads((out / "folds" / f"fold{k}_textcnn.json").read_text(encoding="utf-8"))


def _cv(corpus_file, out, **settings):
    run_cv(make_config({**TINY, **settings}), corpus_file, str(out), folds=3, baselines=False, progress=False,
           only_folds=[0])
    return _fold(out)


@pytest.fixture(scope="module")
def first(corpus_file, tmp_path_factory, kdedge_cache):
    """One fold with a fresh teacher cache: the teacher is trained and stored."""
    for path in (kdedge_cache / "teachers").glob("*"):
        path.unlink()
    return _cv(corpus_file, tmp_path_factory.mktemp("cv") / "a")


@pytest.fixture(scope="module")
def scratch(first, corpus_file, tmp_path_factory):
    """The same fold with a KD student from fresh weights (the default starts it from the plain student)."""
    return _cv(corpus_file, tmp_path_factory.mktemp("cv") / "scratch", kd_init="scratch")


@pytest.mark.slow
def test_first_run_trains_and_caches_its_teacher(first, kdedge_cache):
    assert first["teacher_cached"] is False
    assert len(list((kdedge_cache / "teachers").glob("*.npz"))) == 1
    with np.load(next((kdedge_cache / "teachers").glob("*.npz")), allow_pickle=False) as arrays:
        assert set(arrays.files) == {"train_logits", "val_logits", "test_logits"}


@pytest.mark.slow
def test_a_fold_file_replays_its_thresholds_and_its_selection(first):
    from kdedge.evaluate import tune_thresholds
    from kdedge.training.selection import compare_students

    cfg = make_config(TINY)
    y_val = np.asarray(first["val_truth"])
    probs = {mode: np.asarray(result["val_probs"]) for mode, result in first["modes"].items()}
    for mode, p in probs.items():
        assert p.shape == y_val.shape, mode
        np.testing.assert_allclose(tune_thresholds(y_val, p, cfg.threshold_min_support),
                                   first["modes"][mode]["thresholds"], atol=1e-4, err_msg=mode)
    logits = {m: np.log(np.clip(probs[m], 1e-7, 1 - 1e-7) / np.clip(1 - probs[m], 1e-7, 1)) for m in ("kd", "student")}
    again = compare_students(y_val, logits, cfg.threshold_min_support, cfg.seed, cfg.select_metric)
    assert again["scores"] == first["modes"]["selected"]["comparison"]["scores"]


@pytest.mark.slow
def test_student_only_settings_reuse_the_teacher(first, corpus_file, tmp_path):
    # without the gate, so that α reaches every label (on these few texts the gate may teach none)
    record = _cv(corpus_file, tmp_path / "b", kd_alpha=0.3, kd_label_gate=False)
    assert record["teacher_cached"] is True
    assert record["modes"]["teacher"] == first["modes"]["teacher"]  # same scores, probabilities, history
    assert record["modes"]["kd"]["alpha"] == 0.3
    assert record["modes"]["kd"]["test_probs"] != first["modes"]["kd"]["test_probs"]



@pytest.mark.slow
def test_either_kd_start_reuses_the_teacher_and_a_warm_kd_student_is_controlled_by_the_plain_student(
        first, scratch, corpus_file, tmp_path):
    assert scratch["teacher_cached"] is True and scratch["modes"]["teacher"] == first["modes"]["teacher"]
    # patience 1 of 4 epochs: the KD student stops before the plain student (which runs out) has run all of them
    modes = _cv(corpus_file, tmp_path / "warm", kd_init="student", epochs=4, patience=1)["modes"]
    assert modes["student"]["epochs_run"] == 4 and modes["kd"]["epochs_run"] < 4, "the premise of this test"
    # its budget holds all of the plain student's epochs: the control is the plain student, not a truncation of it
    assert modes["student_same_budget"]["is_plain_student"] is True
    assert modes["student_same_budget"]["test_probs"] == modes["student"]["test_probs"]
    settings = json.loads((tmp_path / "warm" / "cv.json").read_text(encoding="utf-8"))
    assert settings["config"]["kd_init"] == "student"
    assert "started from the plain student's weights" in (tmp_path / "warm" / "results.md").read_text(encoding="utf-8")

@pytest.mark.slow
def test_teacher_settings_retrain_the_teacher(first, corpus_file, tmp_path):
    record = _cv(corpus_file, tmp_path / "c", dropout=0.2)
    assert record["teacher_cached"] is False


@pytest.mark.slow
def test_a_damaged_cache_entry_is_retrained(first, corpus_file, tmp_path, kdedge_cache):
    for path in (kdedge_cache / "teachers").glob("*.npz"):
        path.write_bytes(b"not an npz")
    record = _cv(corpus_file, tmp_path / "d")
    assert record["teacher_cached"] is False
    assert record["modes"]["teacher"]["tuned"] == first["modes"]["teacher"]["tuned"]  # same seed, same teacher


@pytest.mark.slow
def test_a_run_directory_keeps_its_teachers_without_the_shared_cache(first, corpus_file, tmp_path, monkeypatch):
    out = tmp_path / "e"
    _cv(corpus_file, out, kd_alpha=0.3)
    assert len(list((out / "teachers").glob("*.npz"))) == 1
    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path / "empty"))  # another machine: only the run directory came
    (out / "folds" / "fold0_textcnn.json").unlink()  # the fold was killed after its teacher was stored
    record = _cv(corpus_file, out, kd_alpha=0.3)
    assert record["teacher_cached"] is True
    assert record["modes"]["teacher"]["test_probs"] == first["modes"]["teacher"]["test_probs"]


@pytest.mark.slow
def test_same_budget_control_reuses_the_plain_student_that_ran_as_long_as_kd(scratch, corpus_file, tmp_path):
    from kdedge.crossval.cv import CvPlan, fold_splits
    from kdedge.text.data import load_dataset
    from kdedge.evaluate import sigmoid
    from kdedge.training.train import featurize, train_modes

    modes = scratch["modes"]  # the rule for a KD student of its own
    assert modes["student"]["epochs_run"] == modes["kd"]["epochs_run"] == TINY["epochs"]
    assert modes["student_same_budget"]["is_plain_student"] is True
    assert modes["student_same_budget"]["test_probs"] == modes["student"]["test_probs"]
    # the premise of the reuse: training the control anew gives that very student
    cfg = make_config(TINY)
    ds = load_dataset(corpus_file)
    feats = featurize(cfg, fold_splits(ds, CvPlan(3, ("textcnn",), None, tmp_path), 0, cfg.seed, cfg.val_split), None)
    kd_epochs = modes["kd"]["epochs_run"]
    control = train_modes(dataclasses.replace(cfg, epochs=kd_epochs, patience=kd_epochs), feats, ("student",),
                          None)["student"]
    probs = sigmoid(control.predict(feats.x["test"]))
    np.testing.assert_allclose(probs, np.array(modes["student"]["test_probs"]), atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(len(usable_cores()) < 2, reason="--jobs 2 needs two CPU cores for this process")
def test_parallel_folds_match_the_sequential_run(first, corpus_file, tmp_path):
    out = tmp_path / "parallel"
    run_cv(make_config(TINY), corpus_file, str(out), folds=3, baselines=False, progress=False, only_folds=[0, 1],
           jobs=2)
    assert sorted(p.name for p in (out / "folds").iterdir()) == ["fold0_textcnn.json", "fold1_textcnn.json"]
    record = _fold(out, 0)
    assert record["teacher_cached"] is True and _fold(out, 1)["teacher_cached"] is False
    for mode in ("student", "kd"):  # a one-core worker trains the same students (up to float summation order)
        np.testing.assert_allclose(record["modes"][mode]["test_probs"], first["modes"][mode]["test_probs"], atol=2e-3)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["architectures"]["textcnn"]["kd"]["folds"] == [0, 1]


def test_parallel_work_is_queued_as_unfinished_fold_architecture_pieces(tmp_path):
    from kdedge.crossval.cv import CvPlan, pieces

    plan = CvPlan(3, ("gru_att", "textcnn"), None, tmp_path)
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "fold1_gru_att.json").write_text("{}", encoding="utf-8")
    (tmp_path / "folds" / "fold0_baselines.json").write_text("{}", encoding="utf-8")
    work = [(k, piece.archs, piece.baselines) for k, piece in pieces(plan, [0, 1, 2])]
    assert work == [(0, ("gru_att",), False), (2, ("gru_att",), False), (0, ("textcnn",), False),
                    (1, ("textcnn",), False), (2, ("textcnn",), False), (1, (), True), (2, (), True)]
    assert pieces(CvPlan(3, ("textcnn",), None, tmp_path, baselines=False), [1])[0][1].fold_file(1, "textcnn") == \
        tmp_path / "folds" / "fold1_textcnn.json"


def test_more_jobs_than_cores_is_a_clear_error():
    from kdedge.crossval.cv import split_cores

    n = len(os.sched_getaffinity(0))
    assert sorted(c for cores in split_cores(n) for c in cores) == sorted(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=f"--jobs {n + 1}: only {n} CPU cores"):
        split_cores(n + 1)


WORKER_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from kdedge.crossval.cv import _start_fold_worker, split_cores

def report_pid_and_wait(path):
    open(path, "w").write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    cores = ctx.Queue()
    cores.put(split_cores(1)[0])
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_start_fold_worker, initargs=(cores, 30)) as pool:
        pool.submit(report_pid_and_wait, sys.argv[1]).result()
"""


def _alive(pid: int) -> bool:
    """A zombie (dead, not yet reaped by a container's init) counts as gone."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_fold_workers_die_when_kdedge_cv_is_killed(tmp_path):
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(WORKER_PARENT, encoding="utf-8")
    parent, worker = subprocess.Popen([sys.executable, str(script), str(pid_file)]), None
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            assert parent.poll() is None, "the pool parent exited before its worker started"
            time.sleep(0.2)
        assert pid_file.exists(), "the fold worker did not start within 120 s"
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)  # no chance to clean up: only the kernel can stop the worker now
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), f"worker {worker} outlived its killed parent"
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)  # a failing run leaves no orphan behind


@pytest.mark.slow
def test_kd_search_keeps_the_best_pair_on_validation(first, corpus_file, tmp_path):
    record = _cv(corpus_file, tmp_path / "e", kd_alpha=[0.2, 0.8], kd_temperature=[1, 3])
    kd = record["modes"]["kd"]
    assert [(t["alpha"], t["temperature"]) for t in kd["search"]] == [(0.2, 1.0), (0.2, 3.0), (0.8, 1.0), (0.8, 3.0)]
    best = min(kd["search"], key=lambda t: t["criterion"])  # first of equals wins
    assert (kd["alpha"], kd["temperature"]) == (best["alpha"], best["temperature"])
    assert kd["epochs_run"] == best["epochs_run"]
    report = (tmp_path / "e" / "results.md").read_text(encoding="utf-8")
    for figure in ("per_label_f1_textcnn.png", "learning_curve_textcnn.png"):
        assert (tmp_path / "e" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "e" / "results.json").read_text(encoding="utf-8"))
    assert len(results["architectures"]["textcnn"]["kd"]["learning_curve"]) == kd["epochs_run"]
    assert f"fold 0: ({best['alpha']:g}, {best['temperature']:g}) of 4" in report
    positives = np.asarray(record["test_truth"]).sum(axis=0)
    for j, label in enumerate(results["settings"]["labels"]):
        f1 = [100 * record["modes"][m]["tuned"]["per_label_f1"][label] for m in ("teacher", "student", "kd")]
        assert f"| {label} | L{j} | {positives[j]} | " + " | ".join(f"{v:.1f}" for v in f1) + " |" in report


@pytest.mark.parametrize("value, expected", [("0.25,0.5", [0.25, 0.5]), ([0, 1], [0.0, 1.0]), ("0.5", 0.5)])
def test_kd_alpha_accepts_a_number_or_a_list(value, expected):
    assert make_config(kd_alpha=value).kd_alpha == expected


@pytest.mark.parametrize("settings,message", [
    ({"kd_alpha": [1.5]}, r"kd_alpha \(--kd-alpha\) must be at least 0 and at most 1"),
    ({"kd_temperature": "0,2"}, r"kd_temperature \(--kd-temperature\) must be greater than 0")])
def test_kd_grid_rejects_values_out_of_range(settings, message):
    with pytest.raises(ValueError, match=message):  # when the config is built, before training
        make_config(settings)


@pytest.mark.slow
def test_resume_accepts_a_run_made_before_a_setting_existed(first, corpus_file, tmp_path):
    out = tmp_path / "f"
    _cv(corpus_file, out)
    settings = json.loads((out / "cv.json").read_text(encoding="utf-8"))
    del settings["config"]["pos_weight"]  # as written by a version without that option
    del settings["config"]["plain_run_out"]  # ... nor this one, whose default changed what training does
    del settings["inputs"]  # ... and without input hashes
    (out / "cv.json").write_text(json.dumps(settings), encoding="utf-8")
    # resumes (nothing to redo) instead of refusing: a missing setting counts as what that version did
    assert _cv(corpus_file, out, plain_run_out=False) == _fold(out)
    for changed in ({"pos_weight": "sqrt"}, {}):  # {}: today's default plain_run_out, which that run did not have
        with pytest.raises(ValueError, match="other settings"):
            _cv(corpus_file, out, **changed)


@pytest.mark.slow
def test_resume_refuses_a_changed_input_file(first, corpus_file, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(Path(corpus_file).read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "h"
    _cv(str(data), out)
    assert json.loads((out / "cv.json").read_text(encoding="utf-8"))["inputs"]["data_sha256"]
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_text("".join(lines[1:] + lines[:1]), encoding="utf-8")  # same texts, same path, other order
    with pytest.raises(ValueError, match="data file differs from the one this run started with"):
        _cv(str(data), out)
    moved = tmp_path / "moved.jsonl"  # the same content under another path resumes (nothing to redo)
    moved.write_text("".join(lines), encoding="utf-8")
    before = (out / "folds" / "fold0_textcnn.json").stat().st_mtime_ns
    _cv(str(moved), out)
    assert (out / "folds" / "fold0_textcnn.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_pos_weight_changes_only_the_students(first, corpus_file, tmp_path):
    record = _cv(corpus_file, tmp_path / "g", pos_weight="balanced")
    assert record["teacher_cached"] is True
    assert record["modes"]["student"]["test_probs"] != first["modes"]["student"]["test_probs"]


@pytest.mark.slow
def test_baselines_keep_word_tokens_in_a_char_level_run(corpus_file, tmp_path):
    runs = {}
    for segmenter in ("char", "jieba"):
        out = tmp_path / segmenter
        run_cv(make_config({**TINY, "segmenter": segmenter, "epochs": 1}), corpus_file, str(out), folds=3,
               progress=False, only_folds=[0])
        runs[segmenter] = json.loads((out / "folds" / "fold0_baselines.json").read_text(encoding="utf-8"))
    assert runs["char"]["modes"]["tfidf_lr"]["test_probs"] == runs["jieba"]["modes"]["tfidf_lr"]["test_probs"]
    results = json.loads((tmp_path / "char" / "results.json").read_text(encoding="utf-8"))
    versus = results["architectures"]["textcnn"]["kd_vs_baselines"]["tfidf_lr"]
    kd, tfidf = _fold(tmp_path / "char")["modes"]["kd"], runs["char"]["modes"]["tfidf_lr"]
    assert versus["folds"] == [0]
    assert versus["metrics"]["macro_f1"]["delta"] == pytest.approx(kd["tuned"]["macro_f1"] - tfidf["tuned"]["macro_f1"])
    assert "| textcnn | TF-IDF + one-vs-rest LR |" in (tmp_path / "char" / "results.md").read_text(encoding="utf-8")


def test_learning_curve_averages_towers_then_folds_and_shows_f1_as_a_score():
    from kdedge.crossval.report import learning_curve

    fold_a = [{"epoch": 1, "val_macro_f1": [-0.2, -0.4]}, {"epoch": 2, "val_macro_f1": [-0.6, -0.8]}]
    fold_b = [{"epoch": 1, "val_macro_f1": [-0.5, -0.5]}]  # stopped after one epoch
    assert learning_curve([fold_a, fold_b], "val_macro_f1") == pytest.approx([0.4, 0.7])
    assert learning_curve([[{"epoch": 1, "val_loss": [0.3]}]], "val_loss") == pytest.approx([0.3])


def test_labels_the_plot_font_cannot_show_are_mapped_in_the_per_label_table():
    from kdedge.crossval.report import _per_label_table, plot_label_names

    labels = ["BODY", "婚后有子女"]
    assert plot_label_names(labels) == ["BODY", "L1"]
    entry = {"per_label_f1": {"BODY": 0.5, "婚后有子女": 0.25}}
    results = {"settings": {"labels": labels}, "test_support": {"BODY": 7, "婚后有子女": 3},
               "architectures": {"textcnn": {"teacher": entry, "kd": entry}}}
    table = _per_label_table(results)
    assert "| label | plot | test positives | textcnn T | textcnn KD |" in table
    assert "| 婚后有子女 | L1 | 3 | 25.0 | 25.0 |" in table


def test_significance_tests():
    from kdedge.crossval.report import paired_p_value, randomization_p_value

    assert paired_p_value([0.7, 0.6, 0.8], [0.7, 0.6, 0.8]) == 1.0
    assert paired_p_value([0.7], [0.6]) is None  # one fold: no test
    assert paired_p_value([0.80, 0.81, 0.79, 0.82, 0.80], [0.70, 0.70, 0.69, 0.71, 0.70]) < 0.001
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.4).astype(int)
    noisy = np.where(rng.random(y.shape) < 0.4, 1 - y, y)
    labels = ["a", "b", "c"]
    assert randomization_p_value(y, noisy, noisy.copy(), "macro_f1", labels, rounds=200) == 1.0
    assert randomization_p_value(y, y, noisy, "macro_f1", labels, rounds=200) < 0.01


def test_baselines_run_fasttext_and_score_it_with_per_label_thresholds_like_every_system(corpus_file):
    """fastText (the `baselines` extra, installed by CI) runs end to end, and both baselines get thresholds tuned
    per label on the validation split, as the students do (not one global threshold)."""
    from conftest import require_extra
    from kdedge.crossval.cv import CvPlan, fold_baselines, fold_splits
    from kdedge.text.data import load_dataset
    from kdedge.teaching.baselines import fasttext_ova, lexical_tokens
    from kdedge.evaluate import tune_thresholds

    require_extra("fasttext", "baselines")
    cfg = make_config(TINY)
    ds = load_dataset(corpus_file)
    splits = fold_splits(ds, CvPlan(3, ("textcnn",), None, Path("unused")), 0, cfg.seed, cfg.val_split)
    record = fold_baselines(cfg, splits, ds.label_names)
    assert set(record["modes"]) == {"tfidf_lr", "fasttext"}
    truth = splits["test"].targets()
    for name, mode in record["modes"].items():
        probs = np.asarray(mode["test_probs"])
        assert probs.shape == truth.shape and np.all((probs >= 0) & (probs <= 1)), name
        assert len(mode["thresholds"]) == len(ds.label_names), name
        assert mode["tuned"]["micro_f1"] > 0.5, (name, mode["tuned"])  # the keyword corpus is easy
    toks = lexical_tokens(cfg, {name: split.texts for name, split in splits.items()})
    again = fasttext_ova(toks["train"], splits["train"].targets(), ds.label_names, {"val": toks["val"]}, seed=cfg.seed)
    want = tune_thresholds(splits["val"].targets(), again["val"], cfg.threshold_min_support)
    assert record["modes"]["fasttext"]["thresholds"] == pytest.approx(want.tolist())
