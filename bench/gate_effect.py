"""Does the per-label gate decide where KD helps? Per-label test F1 of the KD student minus the plain student's
(tuned thresholds, points), split by whether the gate let the teacher teach the label, from committed cv runs
(not a test: run it by hand).

    python bench/gate_effect.py --runs docs/results/healthner9-paper2724-full-table docs/results/healthner9-paper2724-table-ap

With two runs of the same folds, also the labels the two runs' gates decided differently, with each run's gain:
if teaching a label is what helps, a label gains where it is taught and not where it is not.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from measure import committed_fold_files, markdown_table


def per_label(run: Path) -> dict:
    """{(arch, fold, label): (taught, KD − plain F1 in points)} for every fold file with a gate record."""
    out = {}
    for _, record in committed_fold_files(run):
        modes = record.get("modes", {})
        gate = modes.get("kd", {}).get("targets", {}).get("gate")
        if not gate or "student" not in modes:
            continue
        kd, plain = modes["kd"]["tuned"]["per_label_f1"], modes["student"]["tuned"]["per_label_f1"]
        for j, label in enumerate(kd):
            out[record["arch"], record["fold"], label] = (bool(gate["teach"][j]), 100 * (kd[label] - plain[label]))
    return out


def _mean(values) -> str:
    return f"{np.mean(values):+.2f} (n {len(values)})" if values else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="committed cv run directories")
    args = parser.parse_args()
    found = {run: per_label(run) for run in args.runs}
    archs = sorted({arch for labels in found.values() for arch, _, _ in labels})
    rows = [[run.name, arch, _mean([d for (a, _, _), (t, d) in labels.items() if a == arch and t]),
             _mean([d for (a, _, _), (t, d) in labels.items() if a == arch and not t])]
            for run, labels in found.items() for arch in archs if any(a == arch for a, _, _ in labels)]
    print(markdown_table(["run", "arch", "KD − plain F1, labels taught", "labels not taught"], rows))
    if len(args.runs) == 2:
        first, second = (found[run] for run in args.runs)
        common = sorted(set(first) & set(second))
        rows = []
        for arch in archs:
            for name, pick in (("taught in the first run only", lambda a, b: a[0] and not b[0]),
                               ("taught in the second run only", lambda a, b: b[0] and not a[0])):
                keys = [k for k in common if k[0] == arch and pick(first[k], second[k])]
                if keys:
                    rows.append([arch, name, _mean([first[k][1] for k in keys]),
                                 _mean([second[k][1] for k in keys])])
        print()
        print(markdown_table(["arch", "labels (fold, label)", f"gain in {args.runs[0].name}",
                              f"gain in {args.runs[1].name}"], rows))


if __name__ == "__main__":
    main()
