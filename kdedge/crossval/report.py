"""Cross-validation report: paper-layout table (mean ± std), KD deltas with p-values, per-label F1 plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kdedge.crossval.cvfiles import read_fold_records, read_settings
from kdedge.evaluate import METRICS, decide, scores
from kdedge.files import atomic_path, write_json_atomic
from kdedge.training.selection import weighted_average_precision

ROW_NAMES = {"teacher": "Binary Optimization (Teacher)",
             "student": "Standalone Multi-label Classifier (Student)",
             "student_same_budget": "Standalone, same budget as KD",
             "kd": "Knowledge Distillation (Teacher + Student)",
             "selected": "Selected on validation (KD or plain student)",
             "tfidf_lr": "TF-IDF + one-vs-rest LR", "fasttext": "fastText (ova)"}
SHORT_MODES = {"teacher": "T", "student": "S", "kd": "KD"}  # column heads of the per-label table
RANKING_METRICS = ("macro_ap", "micro_ap")  # threshold-free: average precision of the test scores
MIN_LEAD = 1.0  # points of teacher − plain student below which "gap closed" is not given (a 0.3 lead made +1.2 "457%")


def paired_p_value(a, b) -> float | None:
    """Two-sided paired t-test over folds (p = 1 when the differences are all zero; None for one fold)."""
    from scipy.stats import ttest_rel

    diff = np.asarray(a) - np.asarray(b)
    if len(diff) < 2:
        return None
    if np.allclose(diff, 0):
        return 1.0
    p = float(ttest_rel(a, b).pvalue)
    return p if np.isfinite(p) else 1.0


def randomization_p_value(y_true, pred_a, pred_b, metric: str, label_names, rounds: int = 2000,
                          seed: int = 0) -> float:
    """Approximate randomisation over pooled texts: swap the two systems' predictions per text at random."""
    rng = np.random.default_rng(seed)
    observed = abs(scores(y_true, pred_a, label_names)[metric] - scores(y_true, pred_b, label_names)[metric])
    if observed == 0:
        return 1.0
    hits = 0
    for _ in range(rounds):
        swap = rng.random(len(y_true)) < 0.5
        a = np.where(swap[:, None], pred_b, pred_a)
        b = np.where(swap[:, None], pred_a, pred_b)
        hits += abs(scores(y_true, a, label_names)[metric] - scores(y_true, b, label_names)[metric]) >= observed
    return (hits + 1) / (rounds + 1)


def _mean_std(values) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "folds": [float(v) for v in values]}


def summarise(out: Path) -> dict:
    """Aggregate every finished fold file of a cv directory into results.json's structure."""
    settings = read_settings(out)
    labels = settings["labels"]
    results = {"settings": settings, "architectures": {}, "baselines": {}}
    by_arch = read_fold_records(out, settings)
    for arch, records in by_arch.items():
        target = results["baselines"] if arch == "baselines" else results["architectures"].setdefault(arch, {})
        entry = {} if arch == "baselines" else target
        modes = [m for m in records[0]["modes"] if all(m in r["modes"] for r in records)]  # older folds lack some
        for mode in modes:
            entry[mode] = {view: {m: _mean_std([r["modes"][mode][view][m] for r in records]) for m in METRICS}
                           for view in ("at_0.5", "tuned")}
            entry[mode]["per_label_f1"] = {lab: float(np.mean([r["modes"][mode]["tuned"]["per_label_f1"][lab]
                                                               for r in records])) for lab in labels}
            entry[mode]["folds"] = [r["fold"] for r in records]
        if arch == "baselines":
            results["baselines"] = entry
            continue
        for mode in modes:
            entry[mode]["learning_curve"] = learning_curve([r["modes"][mode]["history"] for r in records],
                                                           settings["config"]["monitor"])
        entry["seconds"] = float(sum(r["seconds"] for r in records))
        entry["teachers_cached"] = sum(bool(r.get("teacher_cached")) for r in records)
        entry["kd_settings"] = [{"fold": r["fold"], "alpha": r["modes"]["kd"].get("alpha"),
                                 "temperature": r["modes"]["kd"].get("temperature"),
                                 "searched": len(r["modes"]["kd"].get("search") or [None])} for r in records]
        entry["ranking"] = _ranking(records, modes)
        entry["kd_vs_student"] = _kd_deltas(records, labels)
        if "selected" in entry:
            entry["selected_vs_student"] = _kd_deltas(records, labels, "selected")
        entry["teacher_summary"] = _teacher_summary(records, labels)
        entry["transfer"] = transfer(records)
    truth = {r["fold"]: np.asarray(r["test_truth"]) for arch, records in by_arch.items() if arch != "baselines"
             for r in records}  # the same test fold for every architecture
    results["test_support"] = {lab: int(sum(y[:, j].sum() for y in truth.values())) for j, lab in enumerate(labels)}
    for arch, entry in results["architectures"].items():
        entry["kd_vs_baselines"] = _kd_vs_baselines(by_arch[arch], by_arch.get("baselines", []))
    return results


def learning_curve(histories, monitor: str) -> list[float]:
    """Validation criterion per epoch as a score (F1 up, loss down): mean over a teacher's towers, then over folds.

    Epoch e averages the folds that ran at least e epochs.
    """
    sign = -1.0 if monitor.endswith("f1") else 1.0  # F1 criteria are stored negated (they are minimised)
    per_epoch: dict[int, list[float]] = {}
    for history in histories:
        for row in history:
            value = float(np.mean(row[monitor]))
            if np.isfinite(value):  # a diverged epoch (NaN loss) is left out, not averaged into NaN
                per_epoch.setdefault(row["epoch"], []).append(sign * value)
    return [float(np.mean(per_epoch[e])) for e in sorted(per_epoch)]


def ranking_scores(truth, probs) -> dict:
    """Macro-average precision (over the labels with a test positive) and micro-average precision of one fold's
    test scores: how well a model ranks, with no threshold in play (the measure the selection compares)."""
    truth = np.asarray(truth, dtype=np.float64)
    ap = weighted_average_precision(np.ones((1, len(truth))), truth, np.asarray(probs, dtype=np.float64))
    return {"macro_ap": float(ap["macro"][0]), "micro_ap": float(ap["micro"][0])}


def _ranking(records, modes) -> dict:
    """Per mode the folds' average precision (mean ± std), then the KD and the selected student − the stronger
    plain student by mean macro-AP, with fold-paired p-values and the number of folds each is ahead."""
    per_fold = {mode: [ranking_scores(r["test_truth"], r["modes"][mode]["test_probs"]) for r in records]
                for mode in modes}

    def column(mode, metric):
        return [f[metric] for f in per_fold[mode]]

    out = {"modes": {mode: {m: _mean_std(column(mode, m)) for m in RANKING_METRICS} for mode in per_fold}}
    plain = [m for m in ("student", "student_same_budget") if m in per_fold]
    if not plain or "kd" not in per_fold:
        return out
    best = max(plain, key=lambda m: out["modes"][m]["macro_ap"]["mean"])
    out["against"] = best
    for mode in ("kd", "selected"):
        if mode in per_fold:
            out[f"{mode}_vs_plain"] = {m: {
                "delta": float(np.mean(column(mode, m)) - np.mean(column(best, m))),
                "p_fold_paired_t": paired_p_value(column(mode, m), column(best, m)),
                "folds_ahead": sum(a > b for a, b in zip(column(mode, m), column(best, m)))}
                for m in RANKING_METRICS}
    return out


def _kd_vs_baselines(records, baseline_records) -> dict:
    """KD − each baseline on the folds both finished (tuned thresholds), with fold-paired p-values."""
    base = {r["fold"]: r for r in baseline_records}
    shared = [r for r in records if r["fold"] in base]
    out = {}
    for name in (base[shared[0]["fold"]]["modes"] if shared else ()):
        kd = {m: [r["modes"]["kd"]["tuned"][m] for r in shared] for m in METRICS}
        other = {m: [base[r["fold"]]["modes"][name]["tuned"][m] for r in shared] for m in METRICS}
        out[name] = {"folds": [r["fold"] for r in shared],
                     "metrics": {m: {"delta": float(np.mean(kd[m]) - np.mean(other[m])),
                                     "p_fold_paired_t": paired_p_value(kd[m], other[m])} for m in METRICS}}
    return out


def transfer(records) -> dict:
    """How much of the teacher's lead KD carries over and how well the selection chose, on the test folds (tuned
    thresholds, macro- and micro-F1 in points): per metric the teacher − plain student gap, KD − plain student,
    the share of the gap KD closes (where the teacher leads by MIN_LEAD or more), and selected − plain student; per
    fold the mode the selection shipped, its validation confidence, and its regret (the better of KD and plain on
    the test fold − the shipped one)."""
    def mean(mode, metric):
        return 100 * float(np.mean([r["modes"][mode]["tuned"][metric] for r in records]))

    out = {}
    for metric in ("macro_f1", "micro_f1"):
        gap, gain = mean("teacher", metric) - mean("student", metric), mean("kd", metric) - mean("student", metric)
        out[metric] = {"teacher_lead": gap, "kd_gain": gain, "gap_closed": gain / gap if gap >= MIN_LEAD else None}
        if all("selected" in r["modes"] for r in records):
            out[metric]["selected_gain"] = mean("selected", metric) - mean("student", metric)
    folds = []
    for r in records:
        if "selected" not in r["modes"]:
            continue
        macro = {m: 100 * r["modes"][m]["tuned"]["macro_f1"] for m in ("student", "kd", "selected")}
        folds.append({"fold": r["fold"], "shipped": r["modes"]["selected"].get("mode"),
                      "confidence": r["modes"]["selected"].get("confidence"),
                      "regret": max(macro["student"], macro["kd"]) - macro["selected"],
                      "kd_minus_student": macro["kd"] - macro["student"]})
    out["selection"] = folds
    return out


def _teacher_summary(records, labels) -> dict:
    """The teacher's kind and cost against a student's, and per label how many folds' KD students it taught."""
    teacher = [r["modes"]["teacher"] for r in records]
    student_seconds = [r["modes"]["student"]["seconds"] for r in records]
    gates = [r["modes"]["kd"].get("targets", {}).get("gate") for r in records]
    return {"kind": teacher[0].get("kind", "towers"),
            "calibration": (records[0]["modes"]["kd"].get("targets") or {}).get("calibration", {}).get("method", "none"),
            "seconds": float(np.mean([t["seconds"] for t in teacher])),
            "student_seconds": float(np.mean(student_seconds)),
            "taught_folds": {lab: sum(bool(g["teach"][j]) for g in gates if g) for j, lab in enumerate(labels)}
            if any(gates) else None}


def _kd_deltas(records, labels, mode: str = "kd") -> dict:
    """`mode` (the KD or the selected student) − the stronger plain student (by mean macro-F1), per view,
    with p-values."""
    out = {}
    for view in ("at_0.5", "tuned"):
        candidates = [m for m in ("student", "student_same_budget") if m in records[0]["modes"]]
        best = max(candidates, key=lambda m: np.mean([r["modes"][m][view]["macro_f1"] for r in records]))
        y = np.concatenate([np.asarray(r["test_truth"]) for r in records])
        preds = {}
        for name in (best, mode):
            preds[name] = np.concatenate([decide(np.asarray(r["modes"][name]["test_probs"]),
                                                 0.5 if view == "at_0.5" else r["modes"][name]["thresholds"])
                                          for r in records])
        out[view] = {"against": best, "metrics": {}}
        for m in METRICS:
            ours = [r["modes"][mode][view][m] for r in records]
            st = [r["modes"][best][view][m] for r in records]
            out[view]["metrics"][m] = {
                "delta": float(np.mean(ours) - np.mean(st)), "p_fold_paired_t": paired_p_value(ours, st),
                "p_randomization": randomization_p_value(y, preds[mode], preds[best], m, labels, rounds=1000)}
    return out


def _p(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _fmt(cell) -> str:
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"


def render_markdown(results: dict) -> str:
    """results.md: the paper's layout (rows arch × mode) for both decision rules, then deltas and baselines."""
    lines = [f"# Cross-validation: {results['settings']['data']}", "",
             f"{results['settings']['folds']} folds (iterative stratification, seed "
             f"{results['settings']['config']['seed']}"
             + (f", grouped by `{results['settings']['group_by']}`" if results['settings']['group_by'] else "")
             + "). Test-fold scores, mean ± std over the finished folds, in %. "
             f"Early stopping / epoch selection: `{results['settings']['config']['monitor']}` on the validation "
             "split of each training fold, patience " + str(results['settings']['config']['patience'])
             + (" (the plain student ran all epochs and kept the best of them)"
                if results['settings']['config'].get('plain_run_out') else "")
             + "; 'same budget' = the plain student trained for exactly the KD student's number of epochs, "
             "best epoch picked by the same rule (when the plain student ran that many epochs itself, it is that "
             "student: patience only stops a run, so training again would repeat it)"
             + ("; the KD student started from the plain student's weights (`--kd-init student`), so its budget "
                "holds all of the plain student's epochs and 'same budget' is the plain student"
                if results['settings']['config'].get('kd_init') == "student" else "")
             + ". Tuned = per-label thresholds chosen on the validation split.", ""]
    lines += _score_tables(results) + _baseline_deltas(results) + _per_label_table(results) + _kd_settings(results)
    lines += _ranking_table(results) + _transfer_table(results) + _teachers_and_time(results)
    return "\n".join(lines) + "\n"


def _score_tables(results: dict) -> list[str]:
    """Per decision rule: every row's mean ± std, then KD (and the selected model) − the stronger plain student."""
    lines = []
    for view, title in (("at_0.5", "Threshold 0.5 (the paper's rule)"), ("tuned", "Tuned thresholds")):
        lines += [f"## {title}", "", "| architecture | model | micro-F1 | macro-F1 | weighted-F1 | subset acc | folds |",
                  "|---|---|---|---|---|---|---|"]
        for arch, entry in results["architectures"].items():
            for mode in ("teacher", "student", "student_same_budget", "kd", "selected"):
                if mode in entry:
                    cells = " | ".join(_fmt(entry[mode][view][m]) for m in METRICS)
                    lines.append(f"| {arch} | {ROW_NAMES[mode]} | {cells} | {len(entry[mode]['folds'])} |")
        for mode, entry in results["baselines"].items():
            cells = " | ".join(_fmt(entry[view][m]) for m in METRICS)
            lines.append(f"| baseline | {ROW_NAMES[mode]} | {cells} | {len(entry['folds'])} |")
        lines += ["", "KD − stronger plain student (points; p: fold-paired t-test / approximate randomisation "
                  "over pooled test texts):", "", "| architecture | vs | " + " | ".join(METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for arch, entry in results["architectures"].items():
            for key, name in (("kd_vs_student", ""), ("selected_vs_student", " (selected)")):
                if key not in entry:
                    continue
                d = entry[key][view]
                cells = " | ".join(f"{100 * d['metrics'][m]['delta']:+.1f} (p={_p(d['metrics'][m]['p_fold_paired_t'])}"
                                   f"/{d['metrics'][m]['p_randomization']:.3f})" for m in METRICS)
                lines.append(f"| {arch}{name} | {d['against']} | {cells} |")
        lines.append("")
    return lines


def _baseline_deltas(results: dict) -> list[str]:
    """The KD student against each baseline, tuned thresholds."""
    lines = ["## KD student − baselines (tuned thresholds, same folds)", "",
              "| architecture | baseline | " + " | ".join(METRICS) + " | folds |", "|---|---|" + "---|" * (len(METRICS) + 1)]
    for arch, entry in results["architectures"].items():
        for name, d in entry["kd_vs_baselines"].items():
            cells = " | ".join(f"{100 * d['metrics'][m]['delta']:+.1f} (p={_p(d['metrics'][m]['p_fold_paired_t'])})"
                               for m in METRICS)
            lines.append(f"| {arch} | {ROW_NAMES[name]} | {cells} | {len(d['folds'])} |")
    return lines


def _kd_settings(results: dict) -> list[str]:
    """The (α, T) each fold chose on validation."""
    lines = ["", "## KD settings", "", "| architecture | (alpha, T) chosen on validation, by fold |", "|---|---|"]
    lines += [f"| {a} | " + ", ".join(f"fold {k['fold']}: ({k['alpha']:g}, {k['temperature']:g}) of {k['searched']}"
                                     if k["alpha"] is not None else f"fold {k['fold']}: config"
                                     for k in e["kd_settings"]) + " |" for a, e in results["architectures"].items()]
    return lines


def _teachers_and_time(results: dict) -> list[str]:
    """Teachers (kind, calibration, cost, labels taught) and the wall time per architecture."""
    lines = ["", "## Teachers", "", "Mean seconds per fold; taught: in how many folds the per-label gate let the "
              "teacher teach each label.", "",
              "| architecture | teacher | calibration | teacher s | student s | teacher ÷ student | taught |",
              "|---|---|---|---|---|---|---|"]
    for a, e in results["architectures"].items():
        t = e["teacher_summary"]
        taught = ", ".join(f"{lab} {n}" for lab, n in t["taught_folds"].items()) if t["taught_folds"] else "all (no gate)"
        lines.append(f"| {a} | {t['kind']} | {t['calibration']} | {t['seconds']:.0f} | {t['student_seconds']:.0f} | "
                     f"{t['seconds'] / max(t['student_seconds'], 1e-9):.2f} | {taught} |")
    lines += ["", "## Wall time", "",
              "Sum over folds of each fold's seconds (teacher and every student trained for it). Folds run "
              "with `--jobs` overlap, so this can exceed the elapsed time.", "",
              "| architecture | seconds (all folds) | folds whose teacher came from the cache |",
              "|---|---|---|"]
    lines += [f"| {a} | {e['seconds']:.0f} | {e['teachers_cached']} |" for a, e in results["architectures"].items()]
    return lines


def _ranking_table(results: dict) -> list[str]:
    """Average precision of the test scores per architecture and model, and KD (and the selected student) − the
    stronger plain student on it."""
    lines = ["", "## Ranking quality (threshold-free, test folds)", "",
             "Average precision of each model's test scores, mean ± std over folds, in %: macro over the labels with a "
             "test positive, micro over every text × label pair. No threshold is in play, so this moves less with a "
             "few rare-label texts than tuned F1 does; it is what the selection compares on validation "
             "(`--select-metric ap`).", "", "| architecture | model | macro-AP | micro-AP | folds |", "|---|---|---|---|---|"]
    deltas = []
    for arch, entry in results["architectures"].items():
        ranking = entry.get("ranking", {})
        for mode, cells in ranking.get("modes", {}).items():
            lines.append(f"| {arch} | {ROW_NAMES[mode]} | {_fmt(cells['macro_ap'])} | {_fmt(cells['micro_ap'])} | "
                         f"{len(cells['macro_ap']['folds'])} |")
        for mode, name in (("kd", ""), ("selected", " (selected)")):
            d = ranking.get(f"{mode}_vs_plain")
            if d:
                n = len(ranking["modes"][mode]["macro_ap"]["folds"])
                deltas.append(f"| {arch}{name} | {ranking['against']} | " + " | ".join(
                    f"{100 * d[m]['delta']:+.1f} (p={_p(d[m]['p_fold_paired_t'])}; ahead in {d[m]['folds_ahead']} of {n})"
                    for m in RANKING_METRICS) + " |")
    if deltas:
        lines += ["", "KD − stronger plain student by macro-AP (points; p: fold-paired t-test):", "",
                  "| architecture | vs | macro-AP | micro-AP |", "|---|---|---|---|"] + deltas
    return lines


def _confidence(value) -> str:
    return "?" if value is None else f"{value:.2f}"


def _transfer_table(results: dict) -> list[str]:
    """Per architecture: the teacher's lead, the share of it KD closes, and how the selection fared per fold."""
    lines = ["", "## Transfer and selection (tuned thresholds, test folds, points)", "",
             f"Gap closed = (KD − plain student) ÷ (teacher − plain student), where the teacher leads by {MIN_LEAD:g} "
             "point or more (a smaller lead is within fold-to-fold noise, and the share would be noise). Per fold: the "
             "model shipped (KD or plain), the share of validation resamples in which KD won, and the regret (the "
             "better of the two on the test fold − the shipped one, macro-F1).", "",
             "| architecture | teacher − plain macro / micro | KD − plain macro / micro | gap closed macro / micro | "
             "selected − plain macro / micro | folds: shipped (confidence, regret) |", "|---|---|---|---|---|---|"]

    def closed(value, lead):
        if value is None:
            return "n/a (no lead)" if lead <= 0 else f"n/a (lead < {MIN_LEAD:g})"
        return f"{100 * value:.0f}%"

    for arch, entry in results["architectures"].items():
        t = entry.get("transfer")
        if not t:
            continue
        ma, mi = t["macro_f1"], t["micro_f1"]
        folds = ", ".join(f"{f['fold']}: {f['shipped']} ({_confidence(f['confidence'])}, {f['regret']:.1f})"
                          for f in t["selection"])
        selected = (f"{ma['selected_gain']:+.1f} / {mi['selected_gain']:+.1f}" if "selected_gain" in ma else "n/a")
        lines.append(f"| {arch} | {ma['teacher_lead']:+.1f} / {mi['teacher_lead']:+.1f} | {ma['kd_gain']:+.1f} / "
                     f"{mi['kd_gain']:+.1f} | {closed(ma['gap_closed'], ma['teacher_lead'])} / "
                     f"{closed(mi['gap_closed'], mi['teacher_lead'])} | {selected} | "
                     f"{folds} |")
    return lines


def plot_label_names(labels) -> list[str]:
    """Label names as the plots print them: `L<j>` for a name the plot font may not render (non-ASCII)."""
    return [lab if lab.isascii() else f"L{j}" for j, lab in enumerate(labels)]


def _per_label_table(results: dict) -> list[str]:
    """Per-label F1 (tuned, mean over folds) of teacher / student / KD per architecture, with test support."""
    labels = results["settings"]["labels"]
    plotted = plot_label_names(labels)
    renamed = plotted != labels  # then a column maps each label to its name in the PNGs
    columns = [(arch, mode) for arch, entry in results["architectures"].items()
               for mode in ("teacher", "student", "kd") if mode in entry]
    lines = ["", "## Per-label F1 (tuned thresholds, mean over folds)", "",
             "Positives in the pooled test folds" + ("; `plot` is the label's name in the PNGs" if renamed else "")
             + ". T = teacher, S = plain student, KD = KD student.", "",
             "| label | " + ("plot | " if renamed else "") + "test positives | "
             + " | ".join(f"{a} {SHORT_MODES[m]}" for a, m in columns) + " |",
             "|---|---|" + ("---|" if renamed else "") + "---|" * len(columns)]
    for lab, short in zip(labels, plotted):
        cells = " | ".join(f"{100 * results['architectures'][a][m]['per_label_f1'][lab]:.1f}" for a, m in columns)
        lines.append(f"| {lab} | " + (f"{short} | " if renamed else "")
                     + f"{results['test_support'][lab]} | {cells} |")
    return lines


CURVE_NAMES = {"teacher": "teacher (mean over its towers)", "student": "plain student", "kd": "KD student"}


def plot_figures(results: dict, out: Path) -> list[str]:
    """Two PNGs per architecture: per-label F1 (tuned) of teacher, student and KD (the paper's Figure 2),
    and their learning curves (validation criterion per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    labels = results["settings"]["labels"]
    monitor = results["settings"]["config"]["monitor"]
    for arch, entry in results["architectures"].items():
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(labels)), 3.5))
        modes = [m for m in ("teacher", "student", "kd") if m in entry]
        width = 0.8 / len(modes)
        x = np.arange(len(labels))
        for i, mode in enumerate(modes):
            ax.bar(x + i * width, [entry[mode]["per_label_f1"][lab] for lab in labels], width, label=mode)
        ax.set_xticks(x + width * (len(modes) - 1) / 2, plot_label_names(labels),
                      rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("F1 (tuned thresholds)")
        ax.set_title(f"{arch}: per-label F1")
        ax.legend()
        names.append(_save_figure(fig, out, f"per_label_f1_{arch}.png"))
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for mode in ("teacher", "student", "kd"):
            if mode in entry:
                curve = entry[mode]["learning_curve"]
                ax.plot(range(1, len(curve) + 1), curve, label=CURVE_NAMES[mode])
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {monitor}")
        ax.set_title(f"{arch}: learning curves, mean over {len(entry['kd']['folds'])} fold(s)")
        ax.legend(fontsize=8)
        names.append(_save_figure(fig, out, f"learning_curve_{arch}.png"))
    return names


def _save_figure(fig, out: Path, name: str) -> str:
    """Write a matplotlib figure atomically (`files.atomic_path`) and close it; returns its file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return name


def write_report(out: Path) -> dict:
    """Write results.json, results.md and the PNGs for a cv directory; return the results."""
    results = summarise(out)
    write_json_atomic(out / "results.json", results)
    md = render_markdown(results)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(md, encoding="utf-8")
    results["plots"] = plot_figures(results, out)
    return results
