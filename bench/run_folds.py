"""Fold by fold, how KD and the selection did in committed cv runs, and how much two runs of the same folds
differ: per architecture, each fold's test macro-F1 (tuned thresholds, points) of the plain student, the KD
student and the shipped one, with the selection's confidence; then, for the runs given, how far the same
network differs between runs fold for fold (not a test: run it by hand).

    python bench/run_folds.py --runs docs/results/healthner9-paper2724-full-table docs/results/healthner9-paper2724-table-ap

A KD − plain gain that moves between two runs of the same folds by as much as it is large cannot be told
from run-to-run noise by one 5-fold run.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from measure import committed_fold_files, markdown_table

NETWORKS = ("student", "kd", "selected")


def fold_scores(run: Path) -> dict:
    """{(arch, fold): {"student"|"kd"|"selected": macro-F1 in points, "shipped": "kd"|"student",
    "confidence": float | None}} for every fold file holding both students."""
    out = {}
    for _, record in committed_fold_files(run):
        modes = record.get("modes", {})
        if not all(name in modes for name in NETWORKS):
            continue
        entry = {name: 100 * modes[name]["tuned"]["macro_f1"] for name in NETWORKS}
        entry["shipped"] = modes["selected"].get("mode", "kd")
        entry["confidence"] = modes["selected"].get("confidence")
        out[record["arch"], record["fold"]] = entry
    return out


def _signed(values) -> str:
    return " ".join(f"{v:+.1f}" for v in values)


def per_run_rows(name: str, scores: dict) -> list[list[str]]:
    rows = []
    for arch in sorted({a for a, _ in scores}):
        folds = [scores[a, f] for a, f in sorted(scores) if a == arch]
        gain = [s["kd"] - s["student"] for s in folds]
        shipped = [s["selected"] - s["student"] for s in folds]
        marks = " ".join(f"{s['selected'] - s['student']:+.1f}{'k' if s['shipped'] == 'kd' else ''}"
                         + (f" ({s['confidence']:.2f})" if s["confidence"] is not None else "") for s in folds)
        rows.append([name, arch, str(len(folds)), f"{np.mean([s['student'] for s in folds]):.1f}",
                     f"{np.mean(gain):+.1f} ± {np.std(gain, ddof=1) if len(gain) > 1 else 0:.1f}",
                     f"{sum(g > 0 for g in gain)} of {len(gain)}", _signed(gain),
                     f"{np.mean(shipped):+.1f}", marks])
    return rows


def between_runs_rows(names: list[str], found: list[dict]) -> list[list[str]]:
    rows = []
    for (i, first), (j, second) in itertools.combinations(enumerate(found), 2):
        for arch in sorted({a for a, _ in first} & {a for a, _ in second}):
            common = sorted(k for k in set(first) & set(second) if k[0] == arch)
            if not common:
                continue
            cells = []
            for name in ("student", "kd"):
                delta = [second[k][name] - first[k][name] for k in common]
                cells.append(f"{np.mean(np.abs(delta)):.1f} (max {np.max(np.abs(delta)):.1f})")
            gain_delta = [(second[k]["kd"] - second[k]["student"]) - (first[k]["kd"] - first[k]["student"])
                          for k in common]
            rows.append([f"{names[i]} → {names[j]}", arch, str(len(common)), *cells, _signed(gain_delta)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="committed cv run directories")
    args = parser.parse_args()
    names = [run.name for run in args.runs]
    found = [fold_scores(run) for run in args.runs]
    print(markdown_table(["run", "arch", "folds", "plain macro", "KD − plain (mean ± sd over folds)",
                          "KD ahead", "KD − plain per fold", "selected − plain",
                          "selected − plain per fold (k: KD shipped; confidence)"],
                         [row for name, scores in zip(names, found) for row in per_run_rows(name, scores)]))
    if len(found) > 1:
        print()
        print(markdown_table(["runs", "arch", "common folds", "plain: mean |Δ| between runs",
                              "KD: mean |Δ| between runs", "change of KD − plain per fold"],
                             between_runs_rows(names, found)))


if __name__ == "__main__":
    main()
