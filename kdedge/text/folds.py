"""Multi-label stratified splits (iterative stratification), optionally keeping groups together."""
from __future__ import annotations

import numpy as np

from kdedge.errors import UsageError


def _group_matrix(y: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Per-group label indicator (union of its texts' labels) and each text's group index."""
    names, index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    gy = np.zeros((len(names), y.shape[1]), dtype=np.float32)
    np.maximum.at(gy, index, y)
    return gy, index


def _stratifiable(y: np.ndarray) -> np.ndarray:
    """`y` as iterative stratification takes it: with one label, its complement beside it (the splitter
    refuses a single column as 'binary')."""
    return np.hstack([y, 1 - y]) if y.shape[1] == 1 else y


def kfold(y: np.ndarray, folds: int, seed: int, groups=None) -> np.ndarray:
    """Fold number of every row: iterative stratification over labels, whole groups per fold."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    unit_y, unit_of_row = (y, np.arange(len(y))) if groups is None else _group_matrix(y, groups)
    if len(unit_y) < folds:
        raise UsageError(f"{len(unit_y)} {'groups' if groups is not None else 'texts'} cannot fill {folds} folds")
    unit_fold = np.empty(len(unit_y), dtype=int)
    splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(unit_y)), _stratifiable(unit_y))):
        unit_fold[test] = k
    return unit_fold[unit_of_row]


def stratified_split(y: np.ndarray, holdout: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows) with about `holdout` of the rows held out, stratified by label."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if not 0.0 < holdout < 1.0:
        raise ValueError(f"the validation share must be between 0 and 1, not {holdout}")
    unit_y, unit_of_row = (y, np.arange(len(y))) if groups is None else _group_matrix(y, groups)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
    _, held_units = next(splitter.split(np.zeros(len(unit_y)), _stratifiable(unit_y)))
    held = np.isin(unit_of_row, held_units)
    return np.flatnonzero(~held), np.flatnonzero(held)
