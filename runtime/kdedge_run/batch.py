"""Label a large dataset with a bundle on a Ray cluster (Ray Data); Ray is imported only when used.

    pip install "./runtime[ray]"
    kdedge-run label --model bundle/ --input texts.jsonl --out labelled/ --workers 2 [--address ray://head:10001]

or from Python: `label_dataset("texts.jsonl", "labelled/", "bundle/", workers=2)`. The input is JSON Lines
with a "text" field (other fields, e.g. "id", are kept) or plain text (one text a line); a path may be a
directory or glob of such files, on a filesystem every Ray node sees. Each of `workers` Ray actors loads
the bundle once (`BundleLabeller`) and labels batches of `batch_size` texts; the output directory holds
JSON Lines files with the input's fields plus "labels", "probabilities" (every label's, in
`labels_order`) and "error" (null, or why that text could not be labelled: an empty text, for one).
Rows keep the input order. The output is written to a temporary sibling, synced to disk and renamed when
complete (a crash leaves the old output or the whole new one).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_dir(tmp: Path, out_path: Path) -> None:
    """Rename the complete directory `tmp` to `out_path` durably: its files and itself synced first, the
    parent directory after (the same guarantee as kdedge's own outputs; the runtime imports nothing of ours)."""
    for path in tmp.rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(tmp)
    os.replace(tmp, out_path)
    _fsync(out_path.parent)


class BundleLabeller:
    """A Ray Data `map_batches` callable class: loads the bundle once per worker, labels numpy batches."""

    def __init__(self, model, backend: str | None = None, threads: int = 1, threshold: float | None = None,
                 k: int | None = None):
        from . import load

        self.clf = load(model, backend=backend, threads=threads)
        self.threshold, self.k = threshold, k

    def __call__(self, batch: dict) -> dict:
        """Add "labels", "probabilities" and "error" columns to a batch with a "text" column."""
        texts = [t if isinstance(t, str) else "" for t in batch["text"]]
        try:
            results = self.clf.predict(texts, k=self.k, threshold=self.threshold)
        except (TypeError, ValueError):  # one bad text: label the others one by one
            results = []
            for text in texts:
                try:
                    results.append(self.clf.predict(text, k=self.k, threshold=self.threshold))
                except (TypeError, ValueError) as e:
                    results.append(e)
        names = self.clf.labels
        ok = [not isinstance(r, Exception) for r in results]
        batch["labels"] = [list(r.labels) if good else [] for r, good in zip(results, ok)]
        batch["probabilities"] = [[r.probabilities[n] for n in names] if good else [] for r, good in zip(results, ok)]
        batch["error"] = [None if good else str(r) for r, good in zip(results, ok)]
        return batch


def label_dataset(input_path: str, out: str, model, workers: int = 2, batch_size: int = 256,
                  backend: str | None = None, threshold: float | None = None, k: int | None = None,
                  address: str | None = None) -> dict:
    """Label every text of `input_path` with `workers` Ray actors; write JSON Lines under `out`.

    Joins the Ray cluster at `address` (None: the running or a new local instance). Returns
    {"texts", "errors", "labels_order", "out"}. Refuses an existing `out`.
    """
    try:
        import ray
    except ImportError:
        raise ImportError('batch labelling needs Ray: pip install "kdedge-run[ray]" (or "ray[data]")') from None
    from . import load
    from .classifier import InputError

    out_path = Path(out)
    if out_path.exists():
        raise FileExistsError(f"{out_path}: already exists; choose another --out")
    if not Path(input_path).exists():
        raise FileNotFoundError(f"{input_path}: no such file or directory")
    labels_order = load(model).labels  # a bad bundle fails here, before the cluster starts
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    files = [input_path] if Path(input_path).is_file() else sorted(str(p) for p in Path(input_path).iterdir()
                                                                   if p.is_file())
    jsonl = all(f.endswith((".jsonl", ".json")) for f in files)
    # Reading and writing take no CPU reservation: the labelling actors may hold every CPU of a small
    # cluster (2 workers on 2 cores), and reads that wait for a free CPU would never run.
    data = ray.data.read_json(files, num_cpus=0) if jsonl else ray.data.read_text(files, num_cpus=0)
    if jsonl and "text" not in (data.schema().names or []):
        raise InputError(f"{input_path}: JSON lines need a \"text\" field")
    labelled = data.map_batches(BundleLabeller, fn_constructor_kwargs={
        "model": None if model is None else str(model), "backend": backend, "threads": 1, "threshold": threshold, "k": k},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        labelled.write_json(str(tmp), ray_remote_args={"num_cpus": 0})
        written = ray.data.read_json(str(tmp))
        texts = written.count()
        errors = written.filter(lambda row: row["error"] is not None).count() if texts else 0
        _publish_dir(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"texts": texts, "errors": errors, "labels_order": labels_order, "out": str(out_path)}
