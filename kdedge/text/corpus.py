"""The unlabeled text `kdedge embed` learns vectors from: which lines, read from which files, and a record that
pins them byte for byte, so that the same command gives the same corpus (and, with one worker, the same vectors).

A source is a plain UTF-8 text file (one sentence or paragraph a line; blank lines skipped), a directory (its
`*.txt`, sorted by name), or a data file (`.jsonl`, `.csv`, `.tsv`, read as `kdedge train --data` reads it): its
texts, each split into lines as if written one per line. `exclude` names data files whose texts must not reach
the vectors (e.g. the texts a model will be evaluated on): every corpus line that is a line of one of them is left
out, from every source.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from kdedge.errors import UsageError
from kdedge.text.data import DataError, load_dataset
from kdedge_run.bundle import file_sha256

DATA_SUFFIXES = (".jsonl", ".csv", ".tsv")


def source_files(paths) -> list[Path]:
    """The files behind `paths`: a directory stands for its `*.txt` files, sorted by name."""
    files = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(given.glob("*.txt"))
            if not found:
                raise DataError(given, None, None, "directory holds no .txt file")
            files += found
        elif not given.is_file():
            raise DataError(given, None, None, "file not found")
        else:
            files.append(given)
    return files


def _nonblank_lines(texts: list[str]) -> list[str]:
    """Every non-blank line of `texts`, in order."""
    return [line for text in texts for line in text.splitlines() if line.strip()]


def _lines(path: Path) -> list[str]:
    """The non-blank lines of a text file, or of a data file's texts."""
    if path.suffix.lower() in DATA_SUFFIXES:
        return _nonblank_lines(load_dataset(path).texts)
    try:
        return _nonblank_lines([path.read_text(encoding="utf-8")])
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, None, None, f"cannot read as UTF-8 text ({exc})") from None


def read_corpus(paths, exclude=()) -> tuple[list[str], dict]:
    """The corpus lines of `paths` (in order) without the lines of `exclude`'s texts, and their record: each
    source's sha256 and the lines it gave and lost, each excluded file's sha256, and `corpus_sha256`, the sha256
    of the lines used written one per line (UTF-8, each ending in a newline)."""
    excluded, excluded_record = set(), []
    for path in map(Path, exclude):
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise DataError(path, None, None, f"--exclude takes a data file ({', '.join(DATA_SUFFIXES)})")
        texts = load_dataset(path).texts
        excluded.update(_nonblank_lines(texts))
        excluded_record.append({"path": str(path), "sha256": file_sha256(path), "texts": len(texts)})
    lines, sources = [], []
    for path in source_files(paths):
        read = _lines(path)
        kept = [line for line in read if line not in excluded]
        lines += kept
        sources.append({"path": str(path), "sha256": file_sha256(path), "lines": len(kept),
                        "excluded_lines": len(read) - len(kept)})
    if not lines:
        raise UsageError("the corpus holds no text" + (" outside the --exclude files" if excluded else ""))
    digest = hashlib.sha256("".join(line + "\n" for line in lines).encode("utf-8")).hexdigest()
    return lines, {"sources": sources, "exclude": excluded_record, "lines": len(lines), "corpus_sha256": digest}
