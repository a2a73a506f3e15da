#!/usr/bin/env python
"""Would shrinking each label's tuned threshold toward 0.5 help on held-out data? Re-scores committed cv runs.

For every fold file of the given cv run directories (docs/results/…), each row's thresholds (tuned on its
fold's validation split) are moved toward 0.5 by K / (n + K), n the label's validation positives in that
fold (recomputed from the data with the run's seed, folds and grouping), and the stored test probabilities are
scored again. K = 0 is what the run reported. Prints mean test micro / macro-F1 per run, architecture, row, K.

    python bench/threshold_shrinkage.py RUN_DIR[=DATA] ...   # DATA: when cv.json's data path is not readable here
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from kdedge.crossval.cv import CvPlan, fold_splits
from kdedge.text.data import load_dataset
from kdedge.evaluate import decide, scores
from measure import committed_fold_files

KS = (0, 5, 10, 20, 40)
ROWS = ("student", "kd", "selected")


def fold_file(run: Path, k: int, arch: str) -> dict | None:
    found = committed_fold_files(run, f"fold{k}_{arch}")
    return found[0][1] if found else None


def rescore(run: Path, data: str | None) -> dict:
    """{(arch, row, K): [(micro, macro) per fold]}."""
    cv = json.loads((run / "cv.json").read_text(encoding="utf-8"))
    cfg = cv["config"]
    ds = load_dataset(data or cv["data"])
    plan = CvPlan(cv["folds"], tuple(cv["archs"]), cv.get("group_by"), run)
    order = [ds.label_names.index(label) for label in cv["labels"]]
    out: dict = {}
    for k in range(cv["folds"]):
        positives = fold_splits(ds, plan, k, cfg["seed"], cfg["val_split"])["val"].targets()[:, order].sum(axis=0)
        for arch in cv["archs"]:
            record = fold_file(run, k, arch)
            if record is None:
                continue
            truth = np.array(record["test_truth"], dtype=float)
            for row in ROWS:
                mode = record["modes"].get(row)
                if mode is None:
                    continue
                tuned, probs = np.array(mode["thresholds"]), np.array(mode["test_probs"])
                for shrink in KS:
                    cut = 0.5 + (tuned - 0.5) * positives / (positives + shrink)
                    s = scores(truth, decide(probs, cut), cv["labels"])
                    out.setdefault((arch, row, shrink), []).append((s["micro_f1"], s["macro_f1"]))
    return out


def main() -> None:
    print("| run | arch | row | " + " | ".join(f"K={k}" for k in KS) + " |")
    print("|---|---|---|" + "---|" * len(KS))
    for arg in sys.argv[1:]:
        run, _, data = arg.partition("=")
        result = rescore(Path(run), data or None)
        for arch, row in dict.fromkeys((a, r) for a, r, _ in result):
            cells = [np.mean(result[(arch, row, k)], axis=0) * 100 for k in KS]
            print(f"| {Path(run).name} | {arch} | {row} | " + " | ".join(f"{a:.1f} / {b:.1f}" for a, b in cells) + " |")


if __name__ == "__main__":
    main()
