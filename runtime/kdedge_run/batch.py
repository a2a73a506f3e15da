"""Label a large dataset with a bundle: in this process, or on the actors of a Ray cluster.

    kdedge-run label --model bundle/ --input texts.jsonl --out labelled/ [--engine ray --workers 2 --address …]

or from Python: `label_dataset("texts.jsonl", "labelled/", "bundle/", engine="ray", workers=2)`.

- Input: a file, or a directory (its regular files, sorted by name; hidden ones skipped). Lines are read by
  the rule of `kdedge-run predict --input` (`kdedge_run.lines`): JSON with a string "text" (other fields
  are kept) or plain text; a line that cannot be read (invalid UTF-8 or JSON, no "text", a JSON line over
  16 MiB) becomes an error record for that line and the job goes on; a leading UTF-8 BOM is skipped.
- Output: `out/NAME.jsonl` for each input file NAME (`NAME` itself when it ends in .jsonl), one line per
  input line, in input order: the input's fields plus "labels", "probabilities" (every label's, in
  `labels_order`; [] on error) and "error" (null, or why this line got no labels: then "line" is added).
- Work: this process reads and writes; lines go in groups (`kdedge_run.lines.groups`, ≤ 2,048 texts,
  ≈ 4 Mi characters) to the predictor: this process (`engine="local"`) or `workers` Ray actors, each
  loading the bundle once, at most two groups per actor in flight. Memory is bounded by the groups in
  flight, not by the input or its longest line. An actor that dies is restarted and its group retried
  (twice); a job that must stop ends with one line (`LabelError`).
- Output is written under `.OUT.partial/` beside `out`, locked (flock) while a run writes it: a second
  run into the same `--out` is refused up front; the partial output of a run that was killed is cleared
  by the next. Files are synced and the directory renamed to `out` when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import deque
from pathlib import Path

from .lines import Line, groups, read_lines
from .locks import exclusive_lock
from .raycluster import RayConnectError, connect, failure_line

LOCK = ".lock"
RETRIES = 2


class LabelError(RuntimeError):
    """Labelling stopped (a worker that keeps failing, a cluster that cannot be reached); one line."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BundleLabeller:
    """Loads the bundle once; labels a group of texts (a Ray actor, or called in this process)."""

    def __init__(self, model, backend: str | None = None, threads: int = 1, threshold: float | None = None,
                 k: int | None = None):
        from . import load

        self.clf = load(model, backend=backend, threads=threads)
        self.threshold, self.k = threshold, k

    def __call__(self, texts: list[str]) -> list[dict]:
        """{"labels", "probabilities", "error"} per text, in order; a text that cannot be labelled gets its error."""
        names = self.clf.labels
        return [{"labels": [], "probabilities": [], "error": str(r)} if isinstance(r, Exception) else
                {"labels": list(r.labels), "probabilities": [r.probabilities[n] for n in names], "error": None}
                for r in self.clf._predict_each(texts, k=self.k, threshold=self.threshold)]


def _output_record(line: Line, result: dict | None) -> str:
    """The output line for an input line and its result (None: the line could not be read)."""
    error = str(line.error) if result is None else result["error"]
    record = dict(line.record or {})
    if error is None:
        record |= result
    else:
        record |= {"line": line.number, "labels": [], "probabilities": [], "error": error}
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (ValueError, RecursionError) as e:  # a field that cannot be written back
        return json.dumps({"line": line.number, "labels": [], "probabilities": [],
                           "error": f"the line's fields cannot be written back as JSON: {e}"}, ensure_ascii=False)


def _inputs(input_path: Path) -> list[tuple[Path, str]]:
    """(input file, output file name) pairs."""
    if input_path.is_dir():
        files = sorted(p for p in input_path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"{input_path}: no input files in this directory")
    elif input_path.is_file():
        files = [input_path]
    else:
        raise FileNotFoundError(f"{input_path}: no such file or directory")
    pairs = [(f, f.name if f.name.endswith(".jsonl") else f"{f.name}.jsonl") for f in files]
    names = [name for _, name in pairs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise ValueError(f"{input_path}: two input files would both be written to {clash}; rename one")
    return pairs


def _claim(out_path: Path) -> tuple[Path, int, bool]:
    """Create or take over `.OUT.partial/` and lock it: (directory, lock fd, whether a stale partial output
    was cleared). FileExistsError when `out` exists or another run holds the lock."""
    if os.path.lexists(out_path):
        raise FileExistsError(f"{out_path}: already exists; choose another --out")
    tmp = out_path.with_name(f".{out_path.name}.partial")
    try:
        tmp.mkdir()
    except FileExistsError:
        if tmp.is_symlink() or not tmp.is_dir():
            raise FileExistsError(f"{tmp}: exists and is not a directory this command made; remove it") from None
    fd = exclusive_lock(tmp / LOCK)
    if fd is None:
        raise FileExistsError(f"{out_path}: another kdedge-run label is writing it (into {tmp}); wait for it "
                              "to finish or choose another --out") from None
    if os.path.lexists(out_path):  # it finished while we waited
        os.close(fd)
        raise FileExistsError(f"{out_path}: already exists; choose another --out")
    stale = [p for p in tmp.iterdir() if p.name != LOCK]
    for p in stale:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return tmp, fd, bool(stale)


class _LocalPool:
    """The predictor in this process: a group is labelled when submitted."""

    def __init__(self, make):
        self.labeller = make()
        self.size = 1

    def submit(self, texts):
        return self.labeller(texts)

    def get(self, handle):
        return handle


class _RayPool:
    """`workers` Ray actors (restarted and retried on death), groups assigned round-robin."""

    def __init__(self, ray, workers: int, kwargs: dict):
        actor = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(BundleLabeller)
        self.ray, self.size = ray, workers
        self.actors = [actor.remote(**kwargs) for _ in range(workers)]
        self.turn = 0

    def submit(self, texts):
        actor = self.actors[self.turn % len(self.actors)]
        self.turn += 1
        return actor.__call__.remote(texts)

    def get(self, handle):
        return self.ray.get(handle)


def label_dataset(input_path: str, out: str, model=None, workers: int = 2, backend: str | None = None,
                  threshold: float | None = None, k: int | None = None, address: str | None = None,
                  engine: str = "ray") -> dict:
    """Label every line of `input_path` (a file or a directory of files) into `out` (see the module doc).

    `engine`: "ray" (`workers` actors on the cluster at `address`; None: the running or a new local
    instance) or "local" (this process). Returns {"texts", "errors", "labels_order", "out", "cleared"}. Its
    keyword parameters are `kdedge-run label`'s options, one to one, which is why there are more than eight.
    """
    from . import load

    if engine not in ("ray", "local"):
        raise ValueError(f"engine must be 'ray' or 'local', got {engine!r}")
    out_path = Path(out)
    pairs = _inputs(Path(input_path))
    labels_order = load(model, backend=backend).labels  # a bad bundle fails here, before any worker starts
    kwargs = {"model": None if model is None else str(model), "backend": backend, "threads": 1,
              "threshold": threshold, "k": k}
    if engine == "ray":
        try:
            import ray  # noqa: F401  (checked before the output is claimed; _start_pool uses it)
        except ImportError:
            raise ImportError('labelling on Ray needs Ray: pip install "kdedge-run[ray]" (or use --engine local)') from None
    tmp, lock_fd, cleared = _claim(out_path)
    try:
        pool = _start_pool(engine, workers, kwargs, address)
        texts, errors = _label_files(pairs, tmp, pool)
        _fsync(tmp)
        os.replace(tmp, out_path)  # with the lock file in it and still locked: no second run can claim `tmp`
        _fsync(out_path.parent)
        os.unlink(out_path / LOCK)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock_fd)
    return {"texts": texts, "errors": errors, "labels_order": labels_order, "out": str(out_path),
            "cleared": cleared}


def _start_pool(engine: str, workers: int, kwargs: dict, address: str | None):
    """The labellers: `workers` Ray actors on the cluster at `address`, or one BundleLabeller in this process."""
    if engine != "ray":
        return _LocalPool(lambda: BundleLabeller(**kwargs))
    import ray

    try:
        connect(ray, address)
        return _RayPool(ray, workers, kwargs)
    except RayConnectError as e:
        raise LabelError(str(e)) from None
    except Exception as e:
        raise LabelError(f"cannot start the Ray workers: {failure_line(e)}") from None


def _label_files(pairs, tmp: Path, pool) -> tuple[int, int]:
    """Each (input file, output name) labelled into `tmp`, line for line and in order, at most 2 × the pool's size
    groups in flight; returns (lines, error records)."""
    texts = errors = 0
    pending: deque = deque()

    def drain(limit: int) -> None:
        nonlocal texts, errors
        while len(pending) > limit:
            sink, group, handle = pending.popleft()
            try:
                results = iter(pool.get(handle))
            except Exception as e:
                raise LabelError(f"labelling stopped: a worker failed {RETRIES + 1} times on lines "
                                 f"{group[0].number}–{group[-1].number}: {failure_line(e)}") from None
            for line in group:
                result = None if line.error is not None else next(results)
                errors += result is None or result["error"] is not None
                sink.write(_output_record(line, result) + "\n")
            texts += len(group)

    for source, name in pairs:
        with open(source, "rb") as stream, open(tmp / name, "w", encoding="utf-8") as sink:
            for group in groups(read_lines(stream)):
                pending.append((sink, group, pool.submit([ln.text for ln in group if ln.error is None])))
                drain(2 * pool.size - 1)
            drain(0)
            sink.flush()
            os.fsync(sink.fileno())
    return texts, errors
