"""Distillation that pays: calibrated teacher targets, the per-label gate, the linear teacher, student selection."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import make_corpus, write_jsonl
from kdedge.config import ConfigError, make_config
from kdedge.evaluate import heldout_f1
from kdedge.teaching.targets import Calibration, fit_calibration, fit_platt, label_alphas, label_gate, logit, soft_targets


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
    assert np.array_equal(fit_calibration("none", z, y, 3).apply(z), z)
    from kdedge.evaluate import fit_temperatures

    cal = fit_calibration("temperature", z, y, 3)
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
        fit_calibration("isotonic", np.zeros((2, 1)), np.zeros((2, 1)), 3)


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
    # the teacher is judged on twice the texts (its out-of-fold outputs): 6 positives a label
    gate = label_gate(np.tile(teacher, (2, 1)), np.tile(y, (2, 1)), student, y, min_support=3, seed=0)
    assert gate["teach"].tolist() == [True, False]
    assert gate["teacher_f1"][0] == pytest.approx(1.0) and gate["student_f1"][1] == pytest.approx(1.0)
    assert gate["teacher_positives"].tolist() == [6, 6] and gate["validation_positives"].tolist() == [3, 3]
    # label 1: the teacher ranks every positive below every negative, so its best cut (0.5) finds none
    assert gate["teacher_f1"][1] == 0.0 == heldout_f1(np.tile(y, (2, 1))[:, 1:], sig(np.tile(teacher, (2, 1))[:, 1:]), 3, 0)[0]
    assert label_alphas(0.25, gate["teach"]).tolist() == [0.25, 1.0]


def test_gate_needs_evidence_before_the_teacher_teaches():
    from kdedge.teaching.targets import GATE_MIN_POSITIVES

    rows = 2 * GATE_MIN_POSITIVES
    y = np.zeros((rows, 3))
    y[:GATE_MIN_POSITIVES - 1, 0] = 1      # label 0: one positive short of the evidence needed
    y[:GATE_MIN_POSITIVES, 1:] = 1         # labels 1 and 2: enough
    perfect = np.where(y > 0, 4.0, -4.0)
    coin = perfect.copy()
    coin[:, 2] = np.where(np.arange(rows) % 2 == 0, 4.0, -4.0)  # label 2: right on half the texts
    y_val = np.zeros((6, 3))
    y_val[:2] = 1                          # 2 validation positives: too few to judge the student (min_support 3)
    student = np.full((6, 3), -4.0)        # … which finds none
    assert label_gate(perfect, y, student, y_val, min_support=3, seed=0)["teach"].tolist() == [False, True, True]
    gate = label_gate(coin, y, student, y_val, min_support=3, seed=0)
    # unjudged labels are taught only where the teacher's own F1 reaches GATE_UNJUDGED_F1 (label 2's is 0.5 exactly)
    assert gate["teach"].tolist() == [False, True, gate["teacher_f1"][2] >= 0.5]
    worse = coin.copy()
    worse[:, 2] = np.where(np.arange(rows) % 3 == 0, 4.0, -4.0)
    assert not label_gate(worse, y, student, y_val, min_support=3, seed=0)["teach"][2]


def test_per_label_alpha_in_the_kd_loss_matches_hand_computation():
    from kdedge.training.distill import kd_loss

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
    from kdedge.text.data import load_dataset
    from kdedge.text.folds import stratified_split
    from kdedge.training.train import featurize

    cfg = make_config({"embedding_dim": 8, "w2v_epochs": 1, "segmenter": "char", "max_len": 24, **settings})
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    train, val = stratified_split(ds.targets(), 0.25, 0)
    return cfg, featurize(cfg, {"train": ds.subset(train), "val": ds.subset(val)})


def test_linear_teacher_learns_keyword_labels_in_seconds(tmp_path):
    from kdedge.teaching.teachers import train_teacher

    cfg, feats = _features(make_corpus(160, seed=1), tmp_path, teacher="linear")
    teacher = train_teacher(cfg, feats)
    assert teacher.model is None
    assert teacher.logits["train"].shape == feats.y["train"].shape
    assert teacher.logits["val"].shape == feats.y["val"].shape
    assert teacher.fit.kind == "linear" and teacher.fit.seconds < 30
    assert teacher.fit.validation["macro_f1"] >= 0.9  # keywords decide the labels
    decided = (sig(teacher.logits["val"]) >= 0.5).astype(float)
    assert (decided == feats.y["val"]).mean() > 0.9


def test_crossfit_teacher_outputs_on_training_texts_are_out_of_fold(tmp_path):
    from kdedge.teaching.teachers import train_teacher

    rows = make_corpus(160, seed=2)
    cfg, feats = _features(rows, tmp_path, teacher="linear", teacher_crossfit=0)
    memorised = train_teacher(cfg, feats)
    cfg3, feats3 = _features(rows, tmp_path, teacher="linear", teacher_crossfit=3)
    crossfit = train_teacher(cfg3, feats3)
    assert np.array_equal(crossfit.logits["val"], memorised.logits["val"])  # the full teacher predicts validation
    # a model scoring texts it trained on is surer of them than models that never saw them
    assert np.abs(memorised.logits["train"]).mean() > np.abs(crossfit.logits["train"]).mean()
    assert crossfit.fit.crossfit == 3


def test_auto_teacher_keeps_the_linear_one_unless_it_would_teach_nothing():
    from types import SimpleNamespace

    from kdedge.teaching.teachers import choose_teacher
    from kdedge.training.trained import Fit, Trained

    y, rng = _val_labels(60)
    y_train = np.tile(y, (3, 1))
    feats = SimpleNamespace(y={"train": y_train, "val": y}, label_names=["a", "b", "c"])
    cfg = make_config({"teacher_crossfit": 3})
    student = Trained(Fit(seconds=1.0), {"val": np.where(y > 0, 2.0, -2.0) + rng.normal(0, 1.2, y.shape)})

    def teacher(train_logits):  # out-of-fold outputs on the training texts, as a cross-fitted teacher gives
        return Trained(Fit(seconds=2.0, crossfit=3), {"train": train_logits, "val": np.zeros_like(y)})

    perfect = teacher(np.where(y_train > 0, 3.0, -3.0))
    useless = teacher(rng.normal(0, 1, y_train.shape))
    asked = []

    def teacher_of(kinds):
        return lambda kind: asked.append(kind) or kinds[kind]

    chosen = choose_teacher(cfg, feats, student, teacher_of({"linear": perfect, "towers": useless}))
    assert chosen is perfect and asked == ["linear"]  # the linear teacher teaches: no towers trained
    assert chosen.fit.candidates["linear"]["labels_taught"] == 3 and chosen.fit.reason.startswith("linear")
    asked.clear()
    chosen = choose_teacher(cfg, feats, student, teacher_of({"linear": useless, "towers": perfect}))
    assert chosen is perfect and asked == ["linear", "towers"]
    assert chosen.fit.candidates["linear"]["labels_taught"] == 0 and "tried linear, towers" in chosen.fit.reason
    chosen = choose_teacher(cfg, feats, student, teacher_of({"linear": useless, "towers": useless}))
    assert "on 0 of 3 labels" not in chosen.fit.reason  # was: "linear: better than the plain student … on 0 of 3 labels"
    assert "no teacher is better than the plain student on any label" in chosen.fit.reason
    assert "teach none" in chosen.fit.reason


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["towers", "students"])
def test_crossfit_network_teacher_is_out_of_fold_on_training_texts_and_bagged_elsewhere(tmp_path, kind):
    """A cross-fitted towers or students teacher: each training text's logits come from the network that did not
    train on it, validation's are the mean of the K networks; a students teacher refuses to run without K."""
    from kdedge.text.folds import kfold
    from kdedge.teaching.teachers import train_teacher, train_towers
    from kdedge.training.train import train_student

    cfg, feats = _features(make_corpus(90, seed=6), tmp_path, teacher=kind, teacher_crossfit=2, epochs=2,
                           patience=2, batch_size=16, arch_params={"filters": 8})
    teacher = train_teacher(cfg, feats)
    fold_of = kfold(feats.y["train"], 2, cfg.seed)
    part_of = train_towers if kind == "towers" else train_student
    parts = [part_of(cfg, feats, rows=np.flatnonzero(fold_of != k)) for k in (0, 1)]  # seeded: the same nets
    for k, part in enumerate(parts):
        held = fold_of == k
        assert np.allclose(teacher.logits["train"][held], part.predict(feats.x["train"][held]), atol=1e-5)
    assert np.allclose(teacher.logits["val"], np.mean([p.predict(feats.x["val"]) for p in parts], axis=0), atol=1e-5)
    assert teacher.model is None and teacher.fit.crossfit == 2 and teacher.fit.kind == kind
    if kind == "students":  # refused when the config is built, before any data is read
        with pytest.raises(ConfigError, match="teacher-crossfit"):
            dataclasses.replace(cfg, teacher_crossfit=0)


@pytest.mark.slow
def test_ensemble_teacher_averages_calibrated_towers_and_linear_on_every_split(tmp_path):
    from kdedge.text.data import load_dataset
    from kdedge.teaching.targets import fit_calibration
    from kdedge.teaching.teachers import linear_teacher, towers_teacher, train_teacher
    from kdedge.training.train import featurize

    cfg = make_config({"embedding_dim": 8, "w2v_epochs": 1, "segmenter": "char", "max_len": 24, "epochs": 2,
                       "patience": 2, "batch_size": 16, "arch_params": {"filters": 8}, "teacher": "ensemble",
                       "teacher_crossfit": 0})
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", make_corpus(120, seed=4)))
    rows = np.arange(len(ds))
    feats = featurize(cfg, {"train": ds.subset(rows[:80]), "val": ds.subset(rows[80:100]),
                            "test": ds.subset(rows[100:])})
    teacher = train_teacher(cfg, feats)
    towers, linear = towers_teacher(cfg, feats), linear_teacher(cfg, feats)  # same seed: same parts
    for split in ("train", "val", "test"):
        parts = [(part.logits[split], part.logits["val"]) for part in (towers, linear)]
        probs = [sig(fit_calibration("platt", val, feats.y["val"], 3).apply(z)) for z, val in parts]
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
def test_the_selected_student_is_the_one_the_validation_comparison_favours_and_export_takes_it(tmp_path):
    from kdedge.training.selection import compare_students, ships_kd
    from kdedge.training.train import train_run
    from kdedge_export.run import load_run

    data = write_jsonl(tmp_path / "d.jsonl", make_corpus(120, seed=3))
    cfg = make_config({"embedding_dim": 8, "w2v_epochs": 1, "segmenter": "char", "max_len": 24, "epochs": 3,
                       "patience": 3, "batch_size": 16, "arch_params": {"filters": 8}})
    metrics = train_run(cfg, data, str(tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    val = [json.loads(line) for line in (run / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    y = np.array([[lab in v["labels"] for lab in metrics["labels"]] for v in val], dtype=float)
    comparison = compare_students(y, {m: np.load(run / "predictions" / f"val_{m}.npy") for m in ("student", "kd")},
                                  cfg.threshold_min_support, cfg.seed, cfg.select_metric)
    better = "kd" if ships_kd(comparison, cfg.select_confidence) else "student"
    assert comparison["metric"] == "ap"  # the default
    assert metrics["selected"]["mode"] == better and metrics["selected"]["comparison"] == comparison
    assert load_run(run).model_kind == better              # export's default follows the run's choice
    other = "student" if better == "kd" else "kd"
    assert load_run(run, other).model_kind == other          # unless --model says otherwise
    assert metrics["modes"]["teacher"]["kind"] == "linear" and metrics["modes"]["teacher"]["crossfit"] == 0
    targets = metrics["modes"]["kd"]["targets"]
    assert targets["calibration"]["method"] == "shift" and targets["fitted_on"] == "validation outputs"
    assert len(targets["gate"]["teach"]) == len(metrics["labels"])
    gate = targets["gate"]  # not cross-fitted (the default): both judged on the validation split
    assert gate["validation_positives"] == y.sum(axis=0).astype(int).tolist() == gate["teacher_positives"]
    assert not (run / "teacher.keras").exists() and (run / "predictions" / "val_teacher.npy").exists()


def _val_labels(n=60, labels=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.35).astype(float)
    y[np.arange(labels) % n, np.arange(labels)] = 1.0
    return y, rng


def test_selection_ships_kd_only_when_the_resamples_favour_it():
    from kdedge.training.selection import select_student
    from kdedge.training.trained import Fit, Trained

    y, rng = _val_labels()
    right = np.where(y > 0, 3.0, -3.0) + rng.normal(0, 0.5, y.shape)
    noisy = np.where(y > 0, 1.0, -1.0) + rng.normal(0, 2.0, y.shape)

    def pick(kd, student, confidence=0.8):
        results = {"kd": Trained(Fit(seconds=1.0), {"val": kd}), "student": Trained(Fit(seconds=1.0), {"val": student})}
        return select_student(results, y, 3, confidence, seed=0)

    better = pick(right, noisy)
    assert better["mode"] == "kd" and better["confidence"] > 0.95 and better["comparison"]["delta"]["macro"] > 0
    assert "KD better in" in better["reason"]
    same = pick(noisy, noisy)  # a tie in every resample: half a win each, below any confidence over 0.5
    assert same["confidence"] == 0.5 and same["mode"] == "student" and "plain student is shipped" in same["reason"]
    assert pick(noisy, noisy, confidence=0.5)["mode"] == "kd"
    assert pick(noisy, right)["mode"] == "student" and pick(noisy, right)["confidence"] < 0.05
    assert select_student({"kd": Trained(Fit(seconds=1.0), {"val": right})}, y, 3, 0.8, 0) is None


def test_selection_scores_each_half_at_thresholds_tuned_on_the_other():
    from kdedge.evaluate import decide, tune_thresholds
    from kdedge.text.folds import kfold
    from kdedge.evaluate import crossfit_decisions

    y, rng = _val_labels(80)
    probs = rng.random(y.shape)
    half = kfold(y, 2, 7)
    got = crossfit_decisions(y, probs, 3, seed=7)
    for h in (0, 1):
        thresholds = tune_thresholds(y[half != h], probs[half != h], 3)
        assert np.array_equal(got[half == h], decide(probs[half == h], thresholds))
    # thresholds tuned on the texts they score flatter a model with no skill; cross-fitted ones do not
    in_sample = decide(probs, tune_thresholds(y, probs, 3))
    from kdedge.evaluate import f1_per_label
    assert f1_per_label(y, in_sample).mean() > f1_per_label(y, got).mean()


def test_unit_weights_give_the_plain_scores_and_the_resamples_are_paired():
    from sklearn.metrics import average_precision_score
    from kdedge.evaluate import scores
    from kdedge.training.selection import compare_students, weighted_average_precision, weighted_f1

    y, rng = _val_labels(50)
    a = (rng.random(y.shape) < 0.4).astype(float)
    plain = weighted_f1(np.ones((1, len(y))), y, a)
    expected = scores(y, a, ["x", "y", "z"])
    assert plain["macro"][0] == pytest.approx(expected["macro_f1"]) and plain["micro"][0] == pytest.approx(expected["micro_f1"])
    # average precision as scikit-learn computes it, ties (rounded scores) and integer weights included
    score = np.round(rng.normal(size=y.shape) + y, 1)
    counts = rng.integers(0, 3, size=len(y)).astype(float)
    for w in (np.ones(len(y)), counts):
        got = weighted_average_precision(w[None], y, score)
        held = [j for j in range(y.shape[1]) if (w * y[:, j]).sum() > 0]
        assert got["macro"][0] == pytest.approx(np.mean([average_precision_score(y[:, j], score[:, j], sample_weight=w)
                                                         for j in held]))
        assert got["micro"][0] == pytest.approx(average_precision_score(y.ravel(), score.ravel(),
                                                                        sample_weight=np.repeat(w, y.shape[1])))
    for metric in ("ap", "f1"):  # the same resamples for both students: a model against itself ties in every one
        same = compare_students(y, {"kd": score, "student": score}, 3, seed=1, metric=metric, draws=300)
        assert same["confidence"] == {"macro": 0.5, "micro": 0.5} and same["delta"] == {"macro": 0.0, "micro": 0.0}
        assert same["metric"] == metric
    pair = {"kd": score, "student": score + rng.normal(size=y.shape)}
    other = compare_students(y, pair, 3, seed=1, draws=300)
    assert 0 < other["confidence"]["macro"] < 1 and other["metric"] == "ap"
    # a margin counts the resamples in which KD is at most that far behind: with 1 (AP lies in [0, 1]), every one
    within = compare_students(y, pair, 3, seed=1, draws=300, margin=1.0)
    assert within["confidence"] == {"macro": 1.0, "micro": 1.0} and within["delta"] == other["delta"]


def test_either_selection_metric_ships_a_better_kd_student_and_says_which_it_used():
    """The KD student separates each label's classes a little better (its scores 0.3 further apart, on noise of
    1.5): both measures ship it, and the record and the reason name the measure."""
    from kdedge.training.selection import select_student
    from kdedge.training.trained import Fit, Trained

    y, rng = _val_labels(120, labels=4, seed=2)
    coarse = np.where(y > 0, 1.0, -1.0) + rng.normal(0, 1.5, y.shape)
    fine = coarse + 0.3 * np.where(y > 0, 1.0, -1.0)
    results = {"kd": Trained(Fit(seconds=1.0), {"val": fine}), "student": Trained(Fit(seconds=1.0), {"val": coarse})}
    ap = select_student(results, y, 3, 0.8, seed=0)
    f1 = select_student(results, y, 3, 0.8, seed=0, metric="f1")
    assert ap["criterion"] == "bootstrap ap" and f1["criterion"] == "bootstrap f1"
    for chosen in (ap, f1):
        assert chosen["comparison"]["delta"]["macro"] > 0 and chosen["mode"] == "kd", chosen["reason"]
    assert "average precision" in ap["reason"] and "cross-fitted thresholds" in f1["reason"]


# ------------------------------------------------------------------------------------------ a teacher that memorises

@pytest.mark.slow
def test_a_memorising_miscalibrated_teacher_no_longer_harms_the_student(tmp_path):
    """A teacher whose outputs on its own training texts are not like its outputs on texts it never saw (here:
    every training text scores above its validation threshold) made the KD student say yes to everything when
    its calibration, fitted on validation outputs, was applied to those memorised outputs. Cross-fitted
    (`--teacher-crossfit K`), the soft targets and the calibration both come from outputs on unseen texts, which
    removes about half the harm. Not cross-fitted (the default since the linear teacher's measurements), the selection keeps the harmful
    KD student from being shipped. Started from the plain student (`--kd-init student`), the KD student is not harmed."""
    from kdedge.text.data import load_dataset
    from kdedge.evaluate import decide, scores, tune_thresholds
    from kdedge.teaching.teachers import out_of_fold
    from kdedge.training.selection import select_student
    from kdedge.training.train import featurize, train_kd, train_student
    from kdedge.training.trained import Fit, Trained

    # every label taught (no gate), so that the targets alone make the difference
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", make_corpus(260, seed=5)))
    rows = np.arange(len(ds))
    harm = {"memorised": [], "memorised at 0.5": [], "crossfit": [], "from the plain student": []}
    for seed in (0, 1, 2):  # one seed decides little on 50 test texts: crossfit's harm ranged −0.01 to −0.12 over 6
        cfg = make_config({"embedding_dim": 8, "w2v_epochs": 1, "segmenter": "char", "max_len": 24, "epochs": 12,
                           "patience": 12, "batch_size": 16, "arch_params": {"filters": 16}, "kd_label_gate": False,
                           "seed": seed, "kd_init": "scratch"})
        feats = featurize(cfg, {"train": ds.subset(rows[:160]), "val": ds.subset(rows[160:210]),
                                "test": ds.subset(rows[210:])})
        rng = np.random.default_rng(0)

        def unseen(y):  # texts the teacher never trained on: a perfect ranking, far below 0.5 (miscalibrated)
            return (np.where(y > 0, -1.5, -4.5) + rng.normal(0, 0.3, y.shape)).astype(np.float32)

        y = feats.y
        memorised = np.where(y["train"] > 0, 4.0, 1.5).astype(np.float32)  # its own training texts: all above −3
        outputs = {"val": unseen(y["val"]), "test": unseen(y["test"])}
        teachers = {
            "memorised": Trained(Fit(seconds=0.0, crossfit=0), {"train": memorised, **outputs}),
            "crossfit": Trained(Fit(seconds=0.0, crossfit=5), {
                "train": out_of_fold(lambda fit_rows, held: unseen(y["train"][held]), y["train"], 5, 0), **outputs}),
        }
        student = train_student(cfg, feats)

        def test_macro(model, at_half=False):
            val, test = sig(model.logits["val"]), sig(model.logits_on("test", feats.x["test"]))
            thresholds = 0.5 if at_half else tune_thresholds(y["val"], val, 3)
            return scores(y["test"], decide(test, thresholds), feats.label_names)["macro_f1"]

        kd = {name: train_kd(cfg, feats, teacher, student) for name, teacher in teachers.items()}
        assert kd["memorised"].kd.targets["fitted_on"] == "validation outputs"
        assert kd["crossfit"].kd.targets["fitted_on"].startswith("out-of-fold")
        assert kd["crossfit"].kd.targets["gate"] is None
        harm["memorised"].append(test_macro(kd["memorised"]) - test_macro(student))
        harm["memorised at 0.5"].append(test_macro(kd["memorised"], True) - test_macro(student, True))
        harm["crossfit"].append(test_macro(kd["crossfit"]) - test_macro(student))
        warm = train_kd(dataclasses.replace(cfg, kd_init="student"), feats, teachers["memorised"], student)
        harm["from the plain student"].append(test_macro(warm) - test_macro(student))
        # with the defaults (not cross-fitted) the harmful KD student is trained, but the plain student is shipped
        assert make_config({}).teacher_crossfit == 0 and make_config({}).select_confidence == cfg.select_confidence
        chosen = select_student({"kd": kd["memorised"], "student": student}, y["val"], cfg.threshold_min_support,
                                cfg.select_confidence, cfg.seed, cfg.select_metric)
        assert chosen["mode"] == "student", chosen["reason"]
    # the old way (calibration from validation applied to memorised outputs) harms, at 0.5 and at tuned thresholds,
    # on every seed (measured: −0.13 to −0.24 tuned, −0.14 to −0.23 at 0.5); cross-fitted, the same teacher harms
    # less on every seed and on average by under half as much (tuned thresholds, as kdedge ships; measured −0.04,
    # −0.10, −0.12, mean −0.085 against −0.185: cross-fitting removes about half the harm, not all of it; seed 0
    # alone, the single seed this test once used, gave −0.035 and read as "no harm")
    assert max(harm["memorised"]) < -0.08 and max(harm["memorised at 0.5"]) < -0.08, harm
    assert all(c > m for c, m in zip(harm["crossfit"], harm["memorised"])), harm
    assert np.mean(harm["crossfit"]) > 0.5 * np.mean(harm["memorised"]), harm
    # started from the plain student (`--kd-init student`), the same memorising teacher does no harm: its KD epochs
    # do not beat the plain student on validation where the targets mislead, so what is kept is the plain student
    # or better (measured −0.008, +0.054, +0.085 macro-F1 on the three seeds)
    assert min(harm["from the plain student"]) > -0.03 and np.mean(harm["from the plain student"]) > 0, harm


def test_folds_and_validation_splits_of_a_single_label_are_stratified():
    # iterative stratification refuses one column ("binary"): the split of a one-label data set and the
    # cross-fitted thresholds of one label's F1 used to fail
    from kdedge.text.folds import kfold, stratified_split

    y = (np.arange(40) % 4 == 0).astype(float)[:, None]
    fold = kfold(y, 2, seed=0)
    assert [int(y[fold == k].sum()) for k in (0, 1)] == [5, 5]
    kept, held = stratified_split(y, 0.2, seed=0)
    assert len(held) == 8 and int(y[held].sum()) == 2 and len(kept) == 32
