"""Distillation that pays: calibrated teacher targets, the per-label gate, the linear teacher, student selection."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_corpus, write_jsonl
from kdedge.config import ConfigError, make_config
from kdedge.targets import (Calibration, fit_calibration, fit_platt, label_alphas, label_gate, logit, soft_targets,
                            tuned_f1)


def sig(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


# ------------------------------------------------------------------------------------------ calibration

def test_shift_moves_the_tuned_threshold_to_one_half():
    z = np.array([[-3.0], [-1.0], [0.5], [3.0]])
    y = np.array([[0.0], [1.0], [1.0], [1.0]])
    # the F1-optimal cut separates z=-3 from z=-1: the midpoint of their probabilities (≥ 0.1, so allowed)
    t = (sig(-3.0) + sig(-1.0)) / 2
    cal = fit_calibration("shift", z, y, min_support=3)
    assert cal.scale.tolist() == [1.0]
    assert cal.bias[0] == pytest.approx(-np.log(t / (1 - t)))
    probs = sig(cal.apply(z))[:, 0]
    assert probs[0] < 0.5 < probs[1]                 # the teacher's decisions now sit at 0.5
    assert sig(cal.apply(np.array([[logit(t)]])))[0, 0] == pytest.approx(0.5)


def test_shift_keeps_labels_with_too_few_positives_at_one_half():
    z = np.array([[-2.0], [-1.0], [1.0]])
    cal = fit_calibration("shift", z, np.array([[0.0], [1.0], [0.0]]), min_support=3)
    assert cal.bias.tolist() == [0.0]


def test_none_is_the_identity_and_temperature_divides():
    z = np.array([[4.0, -2.0], [-4.0, 2.0], [3.0, 1.0], [-3.0, -1.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    assert np.array_equal(fit_calibration("none", z, y).apply(z), z)
    from kdedge.evaluate import fit_temperatures

    cal = fit_calibration("temperature", z, y)
    assert np.allclose(cal.scale, 1.0 / fit_temperatures(z, y)) and np.all(cal.bias == 0.0)


def test_platt_recovers_a_known_miscalibration():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 40000)
    y = (rng.random(z.shape) < sig(2.0 * z - 1.0)).astype(float)  # true probability σ(2z − 1)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(2.0, abs=0.08) and b == pytest.approx(-1.0, abs=0.06)


def test_platt_solution_is_stationary_for_the_smoothed_targets():
    z = np.array([-2.0, -0.5, 0.3, 1.0, 2.5, -1.2, 0.8])
    y = np.array([0, 0, 1, 1, 1, 1, 0], dtype=float)
    a, b = fit_platt(z, y)
    t = np.where(y > 0, (4 + 1) / (4 + 2), 1 / (3 + 2))  # 4 positives, 3 negatives: Platt's targets
    p = sig(a * z + b)
    assert abs((p - t).sum()) < 1e-8 and abs(((p - t) * z).sum()) < 1e-8  # ∂loss/∂b = ∂loss/∂a = 0


def test_unknown_calibration_is_rejected():
    with pytest.raises(ValueError, match="shift"):
        fit_calibration("isotonic", np.zeros((2, 1)), np.zeros((2, 1)))


def test_soft_targets_are_calibrated_then_softened():
    cal = Calibration("shift", np.array([1.0, 2.0]), np.array([0.5, -1.0]))
    z = np.array([[1.0, 1.0], [-2.0, 0.0]])
    expected = sig(np.array([[1.5, 1.0], [-1.5, -1.0]]) / 4.0)
    assert np.allclose(soft_targets(z, cal, 4.0), expected, atol=1e-7)
    assert soft_targets(z, cal, 4.0).dtype == np.float32


# ------------------------------------------------------------------------------------------ gate

def test_gate_keeps_labels_the_teacher_wins_or_ties_and_drops_the_others():
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1], [0, 0]], dtype=float)
    teacher = np.array([[3, -1], [2, 1], [-2, -1], [-3, 1], [2, -1], [-2, 1]], dtype=float)  # perfect on 0, not 1
    student = np.array([[2, 2], [1, -2], [-1, 2], [-2, -2], [1, 2], [-1, -2]], dtype=float)  # perfect on both
    gate = label_gate(teacher, student, y, min_support=3)
    assert gate["teach"].tolist() == [True, False]
    assert gate["teacher_f1"][0] == pytest.approx(1.0) and gate["student_f1"][1] == pytest.approx(1.0)
    # label 1: the teacher ranks every positive below every negative, so its best cut (0.5) finds none
    assert gate["teacher_f1"][1] == 0.0 == tuned_f1(y[:, 1:], sig(teacher[:, 1:]))[0]
    assert label_alphas(0.25, gate["teach"]).tolist() == [0.25, 1.0]


def test_per_label_alpha_in_the_kd_loss_matches_hand_computation():
    from kdedge.distill import kd_loss

    y = np.array([[1.0, 0.0]], dtype=np.float32)
    soft = np.array([[0.2, 0.9]], dtype=np.float32)
    z = np.array([[0.4, -0.3]], dtype=np.float32)
    t = 2.0

    def bce(target, logit_):
        p = sig(logit_)
        return -(target * np.log(p) + (1 - target) * np.log(1 - p))

    # label 0 gated (α = 1: true label only), label 1 taught with α = 0.5
    expected = np.mean([bce(1.0, 0.4), 0.5 * bce(0.0, -0.3) + 0.5 * t ** 2 * bce(0.9, -0.3 / t)])
    value = float(kd_loss(y, soft, z, np.array([1.0, 0.5], dtype=np.float32), t))
    assert value == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------ teachers

def _features(rows, tmp_path, **settings):
    from kdedge.data import load_dataset
    from kdedge.folds import stratified_split
    from kdedge.train import featurize

    cfg = make_config({"embedding_dim": 8, "w2v_epochs": 1, "segmenter": "char", "max_len": 24, **settings})
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    train, val = stratified_split(ds.targets(), 0.25, 0)
    return cfg, featurize(cfg, {"train": ds.subset(train), "val": ds.subset(val)})


def test_linear_teacher_learns_keyword_labels_in_seconds(tmp_path):
    from kdedge.teachers import train_teacher

    cfg, feats = _features(make_corpus(160, seed=1), tmp_path)
    teacher = train_teacher(cfg, feats)
    assert teacher.model is None
    assert teacher.logits["train"].shape == feats.y["train"].shape
    assert teacher.logits["val"].shape == feats.y["val"].shape
    assert teacher.fit.kind == "linear" and teacher.fit.seconds < 30
    assert teacher.fit.validation["macro_f1"] >= 0.9  # keywords decide the labels
    decided = (sig(teacher.logits["val"]) >= 0.5).astype(float)
    assert (decided == feats.y["val"]).mean() > 0.9


def test_crossfit_teacher_outputs_on_training_texts_are_out_of_fold(tmp_path):
    from kdedge.teachers import train_teacher

    rows = make_corpus(160, seed=2)
    cfg, feats = _features(rows, tmp_path)
    memorised = train_teacher(cfg, feats)
    cfg3, feats3 = _features(rows, tmp_path, teacher_crossfit=3)
    crossfit = train_teacher(cfg3, feats3)
    assert np.array_equal(crossfit.logits["val"], memorised.logits["val"])  # the full teacher predicts validation
    # a model scoring texts it trained on is surer of them than models that never saw them
    assert np.abs(memorised.logits["train"]).mean() > np.abs(crossfit.logits["train"]).mean()
    assert crossfit.fit.crossfit == 3


@pytest.mark.slow
def test_ensemble_teacher_averages_calibrated_towers_and_linear_on_every_split(tmp_path):
    from kdedge.data import load_dataset
    from kdedge.targets import fit_calibration
    from kdedge.teachers import linear_teacher, towers_teacher, train_teacher
    from kdedge.train import featurize

    cfg = make_config({"embedding_dim": 8, "w2v_epochs": 1, "segmenter": "char", "max_len": 24, "epochs": 2,
                       "patience": 2, "batch_size": 16, "arch_params": {"filters": 8}, "teacher": "ensemble"})
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", make_corpus(120, seed=4)))
    rows = np.arange(len(ds))
    feats = featurize(cfg, {"train": ds.subset(rows[:80]), "val": ds.subset(rows[80:100]),
                            "test": ds.subset(rows[100:])})
    teacher = train_teacher(cfg, feats)
    towers, linear = towers_teacher(cfg, feats), linear_teacher(cfg, feats)  # same seed: same parts
    for split in ("train", "val", "test"):
        parts = [(part.logits[split], part.logits["val"]) for part in (towers, linear)]
        probs = [sig(fit_calibration("platt", val, feats.y["val"]).apply(z)) for z, val in parts]
        assert np.allclose(teacher.logits[split], logit(np.mean(probs, axis=0)), atol=1e-4)
    assert set(teacher.fit.components) == {"towers", "linear"}
    assert teacher.fit.kind == "ensemble" and teacher.model is None
    assert all("macro_f1" in c["validation"] for c in teacher.fit.components.values())


def test_config_choices_fail_before_any_data_is_read(tmp_path):
    for bad in ({"teacher": "forest"}, {"teacher_calibration": "isotonic"}, {"teacher_crossfit": 1},
                {"kd_alpha": 1.5}, {"monitor": "accuracy"}):
        with pytest.raises(ConfigError):
            make_config(bad)
    from click.testing import CliRunner

    from kdedge.cli import main

    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "missing.jsonl"), "--out",
                                       str(tmp_path / "run"), "--teacher-crossfit", "1"])
    assert result.exit_code == 2 and "teacher_crossfit" in result.output and "missing" not in result.output


# ------------------------------------------------------------------------------------------ selection

@pytest.mark.slow
def test_the_selected_student_is_the_better_one_on_validation_and_export_takes_it(tmp_path):
    from kdedge.distill import group_criterion
    from kdedge.train import train_run
    from kdedge_export.run import load_run

    data = write_jsonl(tmp_path / "d.jsonl", make_corpus(120, seed=3))
    cfg = make_config({"embedding_dim": 8, "w2v_epochs": 1, "segmenter": "char", "max_len": 24, "epochs": 3,
                       "patience": 3, "batch_size": 16, "arch_params": {"filters": 8}})
    metrics = train_run(cfg, data, str(tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    val = [json.loads(line) for line in (run / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    y = np.array([[lab in v["labels"] for lab in metrics["labels"]] for v in val], dtype=float)
    criterion = {m: group_criterion(cfg.monitor, y, np.load(run / "predictions" / f"val_{m}.npy"),
                                    list(range(y.shape[1])), cfg.threshold_min_support) for m in ("student", "kd")}
    better = "kd" if criterion["kd"] <= criterion["student"] else "student"
    assert metrics["selected"]["mode"] == better
    assert metrics["selected"]["values"][better] == pytest.approx(-criterion[better], abs=1e-6)
    assert load_run(run).model_kind == better              # export's default follows the run's choice
    other = "student" if better == "kd" else "kd"
    assert load_run(run, other).model_kind == other          # unless --model says otherwise
    assert metrics["modes"]["teacher"]["kind"] == "linear"
    assert metrics["modes"]["kd"]["targets"]["calibration"]["method"] == "shift"
    assert len(metrics["modes"]["kd"]["targets"]["gate"]["teach"]) == len(metrics["labels"])
    assert not (run / "teacher.keras").exists() and (run / "predictions" / "val_teacher.npy").exists()


def test_select_student_prefers_kd_on_a_tie_and_names_the_reason():
    from kdedge.train import select_student
    from kdedge.trained import Fit, Trained

    results = {mode: Trained(Fit(seconds=1.0, best_value=[-0.70]), {}) for mode in ("student", "kd")}
    assert select_student(results, "val_macro_f1")["mode"] == "kd"
    results["student"].fit.best_value = [-0.75]
    chosen = select_student(results, "val_macro_f1")
    assert chosen["mode"] == "student" and "0.7500" in chosen["reason"]
    assert select_student({"kd": results["kd"]}, "val_macro_f1") is None
