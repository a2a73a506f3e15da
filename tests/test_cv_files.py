"""A cv run directory read back (resume and report): damaged, edited or foreign files give one clear error
naming the file and field, never a traceback or a silently wrong table. No training: the run directory is
written here as `kdedge cv` writes it (kdedge.crossval.cvfiles)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kdedge.config import TrainConfig
from kdedge.crossval.cvfiles import fold_file, read_fold_records, read_settings, write_fold_record
from kdedge.errors import ReadBackError
from kdedge.evaluate import decide, scores
from kdedge.crossval.report import summarise, write_report

LABELS = ["违约", "利息"]
ARCH = "textcnn"


def _mode(truth: np.ndarray, probs: np.ndarray) -> dict:
    thresholds = [0.4, 0.6]
    return {"at_0.5": scores(truth, decide(probs, 0.5), LABELS), "tuned": scores(truth, decide(probs, thresholds), LABELS),
            "thresholds": thresholds, "test_probs": probs.round(4).tolist(), "history": [], "epochs_run": 1,
            "best_epoch": [1], "seconds": 0.1}


def make_run(out, folds: int = 3) -> None:
    """A finished 3-fold run of one architecture plus baselines, as kdedge cv leaves it."""
    rng = np.random.default_rng(0)
    (out / "folds").mkdir(parents=True)
    settings = {"data": "d.jsonl", "folds": folds, "archs": [ARCH], "group_by": None, "config": TrainConfig().to_dict(),
                "labels": LABELS, "inputs": {}}
    (out / "cv.json").write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")
    for k in range(folds):
        truth = rng.integers(0, 2, size=(12, len(LABELS)))
        modes = {name: _mode(truth, np.clip(truth * 0.6 + rng.random(truth.shape) * 0.5, 0, 1))
                 for name in ("teacher", "student", "kd")}
        modes["teacher"]["kind"] = "linear"
        modes["student"]["history"] = [{"epoch": 1, "val_macro_f1": -0.5}]
        write_fold_record(fold_file(out, k, ARCH), {"fold": k, "arch": ARCH, "seconds": 1.5, "modes": modes,
                                                    "test_truth": truth.tolist(), "test_ids": list(range(12))})
        baseline = {"at_0.5": modes["student"]["at_0.5"], "tuned": modes["student"]["tuned"]}
        write_fold_record(fold_file(out, k, "baselines"), {"fold": k, "modes": {"tfidf_lr": baseline}})


def edit(path, change) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    change(record)
    path.write_text(json.dumps(record), encoding="utf-8")


def test_an_intact_run_reads_back_and_reports(tmp_path):
    make_run(tmp_path)
    records = read_fold_records(tmp_path, read_settings(tmp_path))
    assert [r["fold"] for r in records[ARCH]] == [0, 1, 2] and len(records["baselines"]) == 3
    results = write_report(tmp_path)
    assert ARCH in results["architectures"] and (tmp_path / "results.md").exists()


def test_the_report_ranks_every_model_without_thresholds(tmp_path):
    from sklearn.metrics import average_precision_score

    make_run(tmp_path)
    results = write_report(tmp_path)
    records = read_fold_records(tmp_path, read_settings(tmp_path))[ARCH]

    def macro_ap(mode):
        return [np.mean([average_precision_score(np.asarray(r["test_truth"])[:, j],
                                                 np.asarray(r["modes"][mode]["test_probs"])[:, j])
                         for j in range(len(LABELS))]) for r in records]

    ranking = results["architectures"][ARCH]["ranking"]
    assert ranking["modes"]["kd"]["macro_ap"]["folds"] == pytest.approx(macro_ap("kd"))
    assert ranking["modes"]["teacher"]["macro_ap"]["folds"] == pytest.approx(macro_ap("teacher"))
    kd, plain = macro_ap("kd"), macro_ap("student")
    assert ranking["against"] == "student"
    assert ranking["kd_vs_plain"]["macro_ap"]["delta"] == pytest.approx(np.mean(kd) - np.mean(plain))
    assert ranking["kd_vs_plain"]["macro_ap"]["folds_ahead"] == sum(a > b for a, b in zip(kd, plain))
    report = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "## Ranking quality (threshold-free, test folds)" in report
    assert f"| {ARCH} | student | {100 * (np.mean(kd) - np.mean(plain)):+.1f} (p=" in report


@pytest.mark.parametrize("lead, shown", [(0.3, "n/a (lead < 1)"), (-2.0, "n/a (no lead)"), (5.0, "40%")])
def test_the_share_of_the_teachers_lead_kd_closes_is_given_only_for_a_lead_of_a_point_or_more(tmp_path, lead, shown):
    from kdedge.crossval.report import _transfer_table, transfer

    make_run(tmp_path)
    records = read_fold_records(tmp_path, read_settings(tmp_path))[ARCH]
    for r in records:  # macro-F1 (points): plain 50, KD 52, teacher 50 + lead
        for mode, value in (("student", 50.0), ("kd", 52.0), ("teacher", 50.0 + lead)):
            r["modes"][mode]["tuned"]["macro_f1"] = value / 100
    shares = transfer(records)
    macro = shares["macro_f1"]
    assert macro["teacher_lead"] == pytest.approx(lead) and macro["kd_gain"] == pytest.approx(2.0)
    assert macro["gap_closed"] == (pytest.approx(2.0 / lead) if lead >= 1 else None)
    row = _transfer_table({"architectures": {ARCH: {"transfer": shares}}})[-1]
    assert row.startswith(f"| {ARCH} | {lead:+.1f} / ") and row.split(" | ")[3].startswith(shown), row


def _set_macro(record):
    record["modes"]["kd"]["tuned"]["macro_f1"] = 0.99


def _set_nan(record):
    record["modes"]["kd"]["tuned"]["macro_f1"] = float("nan")


def _drop_label(record):
    del record["modes"]["student"]["tuned"]["per_label_f1"][LABELS[1]]


def _short_probs(record):
    record["modes"]["kd"]["test_probs"] = record["modes"]["kd"]["test_probs"][:-1]


DAMAGES = {
    # name: (what is done to fold 1's file, words the error must hold)
    "empty": (lambda p: p.write_bytes(b""), "fold1_textcnn.json"),
    "a list": (lambda p: p.write_text("[1, 2]"), "must be an object"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:200]), "fold1_textcnn.json"),
    "edited macro": (lambda p: edit(p, _set_macro), "digest mismatch"),
    "NaN metric (digest removed)": (lambda p: edit(p, lambda r: (_set_nan(r), r.pop("digest"))),
                                    "modes.kd.tuned.macro_f1"),
    "label missing (digest removed)": (lambda p: edit(p, lambda r: (_drop_label(r), r.pop("digest"))),
                                       "per_label_f1.利息"),
    "short test_probs (digest removed)": (lambda p: edit(p, lambda r: (_short_probs(r), r.pop("digest"))),
                                          "modes.kd.test_probs"),
    "fold number differs": (lambda p: edit(p, lambda r: r.update(fold=2)), "the file name says 1"),
    "not UTF-8": (lambda p: p.write_bytes(b'{"fold": 1, "x": "\xff"}'), "UTF-8"),
    "a directory": (lambda p: (p.unlink(), p.mkdir()), "fold1_textcnn.json"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_fold_file_is_named_with_its_field(tmp_path, damage):
    make_run(tmp_path)
    change, words = DAMAGES[damage]
    change(fold_file(tmp_path, 1, ARCH))
    with pytest.raises(ReadBackError) as err:
        summarise(tmp_path)
    assert words in str(err.value) and "fold1_textcnn.json" in str(err.value), str(err.value)


def test_a_symlinked_fold_file_is_refused(tmp_path):
    make_run(tmp_path)
    path = fold_file(tmp_path, 1, ARCH)
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(ReadBackError, match="fold1_textcnn.json"):
        summarise(tmp_path)


@pytest.mark.parametrize("name", ["fold7_textcnn.json", "fold0_gru_att.json", "notes.txt"])
def test_a_file_that_is_not_of_this_run_is_refused_not_averaged(tmp_path, name):
    make_run(tmp_path)
    (tmp_path / "folds" / name).write_text((fold_file(tmp_path, 0, ARCH)).read_text(encoding="utf-8"))
    with pytest.raises(ReadBackError, match="not a fold file of this run"):
        summarise(tmp_path)


def test_a_writers_temporary_file_is_skipped(tmp_path):
    make_run(tmp_path)
    (tmp_path / "folds" / ".fold2_textcnn.tmp123.json").write_text("{half")
    assert len(read_fold_records(tmp_path, read_settings(tmp_path))[ARCH]) == 3


@pytest.mark.parametrize("settings, words", [
    ("", "cv.json"),
    ("[]", "must be an object"),
    ('{"folds": 1, "archs": ["textcnn"], "labels": ["a"], "config": {}}', "'folds'"),
    ('{"folds": 3, "archs": [], "labels": ["a"], "config": {}}', "'archs'"),
    ('{"folds": 3, "archs": ["textcnn"], "labels": [1], "config": {}}', "'labels'"),
    ('{"folds": 3, "archs": ["textcnn"], "labels": ["a"], "config": {}}', "'config.monitor'"),
    ('{"folds": 3, "archs": ["textcnn"], "labels": ["a"], "config": {"monitor": "val_loss", "seed": -1}}',
     "'config.seed'"),
])
def test_a_damaged_cv_json_is_named(tmp_path, settings, words):
    make_run(tmp_path)
    (tmp_path / "cv.json").write_text(settings, encoding="utf-8")
    with pytest.raises(ReadBackError) as err:
        read_settings(tmp_path)
    assert words in str(err.value) and "cv.json" in str(err.value), str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_cv_json_does_not_hang_a_resume(tmp_path):
    """`kdedge cv --out` on a directory whose cv.json is a FIFO: exit 2 naming it, at once, no traceback."""
    make_run(tmp_path / "run")
    (tmp_path / "run" / "cv.json").unlink()
    os.mkfifo(tmp_path / "run" / "cv.json")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"文本{i}", "labels": [LABELS[i % 2]]}, ensure_ascii=False) + "\n"
                            for i in range(30)), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "kdedge.cli", "cv", "--data", str(data), "--folds", "3",
                           "--archs", ARCH, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "kdedge: error:" in proc.stderr and "cv.json" in proc.stderr and "Traceback" not in proc.stderr


def _cached_teacher(tmp_path):
    from kdedge.crossval.cv import CACHED_SPLITS, save_cached_teacher
    from kdedge.training.trained import Fit, Trained

    logits = {split: np.zeros((4, len(LABELS)), dtype=np.float32) for split in CACHED_SPLITS}
    save_cached_teacher("k", Trained(fit=Fit(seconds=1.0, kind="linear"), logits=logits), [tmp_path])
    return tmp_path / "k.npz"


def test_an_intact_cached_teacher_is_used(tmp_path):
    from kdedge.crossval.cv import load_cached_teacher

    _cached_teacher(tmp_path)
    teacher, index = load_cached_teacher("k", [tmp_path])
    assert teacher is not None and teacher.cached and index == 0


@pytest.mark.parametrize("damage", ["fifo", "link", "nan", "edited logit", "edited fit", "moved from another key"])
def test_a_damaged_cached_teacher_is_trained_again_not_trusted(tmp_path, damage):
    from kdedge.crossval.cv import CACHED_SPLITS, load_cached_teacher

    npz = _cached_teacher(tmp_path)
    said = []
    if damage == "edited logit":  # finite, right shape: only the digest tells
        logits = {split: np.zeros((4, len(LABELS)), dtype=np.float32) for split in CACHED_SPLITS}
        logits["train"][0, 0] = 3.0
        np.savez(npz, **{f"{split}_logits": a for split, a in logits.items()})
    elif damage == "edited fit":
        fit = json.loads(npz.with_suffix(".json").read_text(encoding="utf-8"))
        npz.with_suffix(".json").write_text(json.dumps({**fit, "seconds": 0.5}), encoding="utf-8")
    elif damage == "moved from another key":  # content stored under key k, found under key j
        (tmp_path / "k.npz").rename(tmp_path / "j.npz")
        (tmp_path / "k.json").rename(tmp_path / "j.json")
        assert load_cached_teacher("j", [tmp_path], said.append) == (None, 1)
        assert said and "does not match its digest" in said[0] and "j.npz" in said[0]
        return
    elif damage == "fifo":
        npz.unlink()
        os.mkfifo(npz)
    elif damage == "link":
        npz.rename(tmp_path / "elsewhere.npz")
        npz.symlink_to(tmp_path / "elsewhere.npz")
    else:
        np.savez(npz, **{f"{split}_logits": np.full((4, len(LABELS)), np.nan) for split in CACHED_SPLITS})
    assert load_cached_teacher("k", [tmp_path], said.append) == (None, 1)
    assert bool(said) == (damage in ("edited logit", "edited fit", "nan"))  # content changed, digest kept


def test_a_cached_teacher_stored_before_digests_is_still_read(tmp_path):
    from kdedge.crossval.cv import load_cached_teacher

    npz = _cached_teacher(tmp_path)
    fit = json.loads(npz.with_suffix(".json").read_text(encoding="utf-8"))
    del fit["digest"]
    npz.with_suffix(".json").write_text(json.dumps(fit), encoding="utf-8")
    teacher, index = load_cached_teacher("k", [tmp_path])
    assert teacher is not None and teacher.cached and index == 0 and teacher.fit.seconds == 1.0
