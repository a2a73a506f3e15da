"""`kdedge cv`: k-fold cross-validation of teacher / student / KD (and baselines), resumable per fold."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdedge.networks.architectures import ARCHITECTURES
from kdedge.config import (EXECUTION_SETTINGS,  # not in a teacher's cache key, and a resume need not repeat them
                           SETTINGS_BEFORE_ADDED, TrainConfig)
from kdedge.text.data import check_trainable, load_dataset
from kdedge.errors import MissingExtraError, PieceFailed, UsageError
from kdedge.tflog import import_tensorflow, log_to_stderr
from kdedge.crossval.cvfiles import MAX_SETTINGS_BYTES, fold_file, read_fold_records, read_settings, write_fold_record
from kdedge.files import (NPY_READ_ERRORS, atomic_path, cache_dir, check_regular_file, read_json_file,
                          shown_path, write_json_atomic)
from kdedge.evaluate import decide, scores, sigmoid, tune_thresholds
from kdedge.text.folds import kfold, stratified_split
from kdedge.training.trained import Fit, Trained

log = logging.getLogger("kdedge")
ROWS = ("teacher", "student", "student_same_budget", "kd", "selected")
BASELINES = ("tfidf_lr", "fasttext")
TARGET_SETTINGS = ("mode", "kd_alpha", "kd_temperature", "teacher_calibration", "kd_label_gate", "select_confidence",
                   "select_metric", "plain_run_out", "kd_init")  # no teacher depends on these: cached teachers stay valid
STUDENT_ONLY_SETTINGS = (*TARGET_SETTINGS, "trainable_embeddings", "pos_weight")
TEACHER_CACHE_VERSION = 1  # bump when the teacher's model or training changes


def teacher_cache_key(cfg: TrainConfig, feats) -> str:
    """Content hash of everything the teacher depends on: its settings and the exact arrays it sees.

    Student-only settings (trainable embeddings, KD alpha/T) are left out, so runs that vary only the
    student reuse one teacher per fold.
    """
    from kdedge.networks.architectures import architecture

    digest = hashlib.sha256()
    student_only = STUDENT_ONLY_SETTINGS if cfg.teacher != "students" else TARGET_SETTINGS  # a bag of students
    settings = {k: v for k, v in cfg.to_dict().items() if k not in student_only + EXECUTION_SETTINGS}
    for name, before in (("teacher", "towers"), ("teacher_crossfit", 0),  # keys of teachers cached before these
                         ("teacher_width_budget", 0)):                     # settings existed stay valid
        if settings[name] == before:
            del settings[name]
    if cfg.teacher == "linear":  # no towers: their width does not matter
        settings.pop("teacher_width_budget", None)
    identity = {"version": TEACHER_CACHE_VERSION, "config": settings, "batch_size": cfg.resolved_batch_size()}
    if architecture(cfg.arch).towered:
        identity["implementation"] = "tower-batched"
    digest.update(json.dumps(identity, sort_keys=True).encode())
    if cfg.teacher != "towers":  # a linear teacher reads the texts themselves, not only their ids
        digest.update(json.dumps(feats.texts, ensure_ascii=False, sort_keys=True).encode())
    for array in (feats.table, *(feats.x[s] for s in ("train", "val", "test")),
                  *(feats.y[s] for s in ("train", "val", "test"))):
        digest.update(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def teacher_dirs(out: Path) -> list[Path]:
    """Where a fold's teacher is looked up and stored, in that order.

    The run directory's own `teachers/` travels with it (a run copied to another machine, or committed,
    resumes without retraining a finished teacher); the shared cache lets other runs with the same
    teacher settings reuse it.
    """
    return [out / "teachers", cache_dir("teachers")]


CACHED_SPLITS = ("train", "val", "test")  # stored as {split}_logits


def teacher_digest(key: str, logits: dict, fit: dict) -> str:
    """SHA-256 of a cached teacher's content (its logits on every split, its fit without the digest) and the key it
    is stored under: a hand edit, a damaged copy or a copy moved to another key shows."""
    digest = hashlib.sha256(key.encode())
    for split in CACHED_SPLITS:
        array = np.ascontiguousarray(logits[split])
        digest.update(f"{split}:{array.shape}:{array.dtype.str}:".encode() + array.tobytes())
    body = {name: value for name, value in fit.items() if name != "digest"}
    digest.update(json.dumps(body, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def load_cached_teacher(key: str, dirs, log=None) -> tuple[Trained | None, int]:
    """A stored teacher (its logits on every split and its fit) and the index of the first of `dirs`
    holding an intact copy; (None, len(dirs)) when it is missing or damaged everywhere. A copy whose digest
    does not match its content is damaged (`log` says so); copies stored before digests existed are read."""
    for index, directory in enumerate(dirs):
        base = Path(directory) / key
        try:
            check_regular_file(Path(f"{base}.npz"))  # a link or a FIFO is not a copy (np.load would block on a FIFO)
            with np.load(f"{base}.npz", allow_pickle=False) as arrays:
                logits = {split: arrays[f"{split}_logits"] for split in CACHED_SPLITS}
            values = read_json_file(Path(f"{base}.json"), MAX_SETTINGS_BYTES)
            if "digest" in values and values["digest"] != teacher_digest(key, logits, values):
                if log:
                    log(f"{shown_path(Path(f'{base}.npz'))}: the cached teacher does not match its digest; "
                        "training it again")
                continue
            fit = Fit.from_dict(values)
        except (*NPY_READ_ERRORS, KeyError, TypeError, AttributeError):  # ReadBackError is a ValueError
            continue
        if not all(a.ndim == 2 and a.dtype.kind == "f" and np.isfinite(a).all() for a in logits.values()):
            continue  # damaged: trained again
        return Trained(fit=fit, logits=logits, cached=True), index
    return None, len(dirs)


def save_cached_teacher(key: str, teacher: Trained, dirs) -> None:
    """Store a teacher's logits (.npz) and fit (.json, with the digest of both) atomically under the key in each
    of `dirs`."""
    fit = teacher.fit.to_dict()
    fit["digest"] = teacher_digest(key, teacher.logits, fit)
    for directory in dirs:
        base = Path(directory) / key
        base.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(f"{base}.npz")) as tmp:
            np.savez(tmp, **{f"{split}_logits": teacher.logits[split] for split in CACHED_SPLITS})
        write_json_atomic(Path(f"{base}.json"), fit)


def test_scores(probs_val, y_val, probs_test, y_test, label_names, min_support) -> dict:
    """Test-fold scores at 0.5 and at per-label thresholds tuned on the validation split (never on the test fold),
    the same rule for every system, baselines included; with the probabilities on both splits (a later study of
    a selection or calibration rule replays them without training again)."""
    thresholds = tune_thresholds(y_val, probs_val, min_support)
    return {"at_0.5": scores(y_test, decide(probs_test, 0.5), label_names),
            "tuned": scores(y_test, decide(probs_test, thresholds), label_names),
            "thresholds": thresholds.tolist(), "test_probs": np.round(probs_test, 5).tolist(),
            "val_probs": np.round(probs_val, 5).tolist()}


@dataclass(frozen=True)
class CvPlan:
    """What every fold of a cv run does: how many folds, which architectures, how texts are grouped into
    folds, whether the baselines run, and the run directory the fold files go to."""

    folds: int
    archs: tuple[str, ...]
    group_by: str | None
    out: Path
    baselines: bool = True

    def fold_file(self, k: int, name: str) -> Path:
        """Fold `k`'s result file for an architecture (or "baselines")."""
        return fold_file(self.out, k, name)


def fold_splits(ds, plan: CvPlan, k: int, seed: int, val_split: float) -> dict:
    """Fold `k`'s train / val / test subsets of `ds`: the test fold, and a validation split of the rest
    (grouped by `plan.group_by` when given)."""
    groups = [e.get(plan.group_by) for e in ds.extra] if plan.group_by else None
    if groups is not None and any(g is None for g in groups):
        missing = groups.index(None)
        raise UsageError(f"--group-by {plan.group_by}: text '{ds.ids[missing]}' has no field '{plan.group_by}'")
    fold_of = kfold(ds.targets(), plan.folds, seed, groups)
    rest = np.flatnonzero(fold_of != k)
    rest_groups = [groups[i] for i in rest] if groups else None
    train_i, val_i = stratified_split(ds.targets()[rest], val_split, seed, rest_groups)
    return {"train": ds.subset(rest[train_i]), "val": ds.subset(rest[val_i]), "test": ds.subset(np.flatnonzero(fold_of == k))}


def fold_teacher(cfg: TrainConfig, feats, out: Path, progress) -> Trained:
    """The fold's teacher: from the run's or the shared cache when one with the same key is stored, else
    trained and stored at once (a run killed while the students train keeps its teacher)."""
    from kdedge.teaching.teachers import train_teacher

    key = teacher_cache_key(cfg, feats)
    dirs = teacher_dirs(out)
    teacher, found_in = load_cached_teacher(key, dirs, log.warning)
    if teacher is None:
        teacher = train_teacher(cfg, feats, progress)
    save_cached_teacher(key, teacher, dirs[:found_in])  # the places that lack it
    return teacher


def train_fold(cfg: TrainConfig, feats, out: Path, progress) -> tuple[dict[str, Trained], dict]:
    """Every row of a fold (ROWS: teacher, plain student, same-budget control, KD student, the one selected
    on validation), each with its test logits, and the selection's record."""
    from kdedge.training.selection import select_student
    from kdedge.training.train import train_modes

    results = train_modes(cfg, feats, ("student", "kd"), progress,
                          lambda kind: fold_teacher(dataclasses.replace(cfg, teacher=kind), feats, out, progress),
                          student_runs_out=True)
    # The same-budget control is the plain student trained exactly as many epochs as KD, its best epoch by the same
    # rule: patience only stops a run, it never changes the epochs that do run, so the plain student trained run out
    # holds it (Trained.within) without training again. A KD student started from the plain student
    # (`--kd-init student`) trained all of the plain student's epochs and its own: the control is the plain student.
    student, kd_epochs = results["student"], results["kd"].fit.epochs_run
    warm = cfg.kd_init == "student"
    results["student_same_budget"] = (student if warm or student.fit.epochs_run == kd_epochs
                                      else student.within(kd_epochs))
    selected = select_student(results, feats.y["val"], cfg.threshold_min_support, cfg.select_confidence, cfg.seed,
                              cfg.select_metric)
    results["selected"] = results[selected["mode"]]
    for res in results.values():
        res.logits_on("test", feats.x["test"])  # the teacher's is computed (or cached) already
    return results, selected


def fold_record(k: int, arch: str, results: dict[str, Trained], selected: dict, feats, splits, cfg: TrainConfig,
                seconds: float) -> dict:
    """The JSON record of one (fold, architecture): test scores of every row at 0.5 and at thresholds tuned
    on validation, the validation and test probabilities and truth, and how each row was trained."""
    y = feats.y
    record = {"fold": k, "arch": arch, "seconds": seconds, "modes": {},
              "teacher_cached": results["teacher"].cached,
              "sizes": {s: len(v) for s, v in splits.items()}, "test_ids": splits["test"].ids}
    for mode in ROWS:
        res = results[mode]
        record["modes"][mode] = {
            **test_scores(sigmoid(res.logits["val"]), y["val"], sigmoid(res.logits["test"]), y["test"],
                          feats.label_names, cfg.threshold_min_support),
            "epochs_run": res.fit.epochs_run, "best_epoch": res.fit.best_epoch, "seconds": res.fit.seconds,
            "history": res.fit.history}
    record["modes"]["kd"].update(results["kd"].kd.to_dict())
    record["modes"]["teacher"].update(results["teacher"].fit.teacher_record())
    record["modes"]["student_same_budget"]["is_plain_student"] = results["student_same_budget"] is results["student"]
    record["modes"]["selected"].update(mode=selected["mode"], reason=selected["reason"],
                                       confidence=selected["confidence"], comparison=selected["comparison"])
    record["test_truth"] = y["test"].astype(int).tolist()
    record["val_truth"] = y["val"].astype(int).tolist()
    return record


def fold_baselines(cfg: TrainConfig, splits, label_names) -> dict:
    """The baselines' record of one fold (TF-IDF + LR; fastText when installed): test scores and seconds."""
    from kdedge.teaching.baselines import fasttext_ova, lexical_tokens, tfidf_lr

    toks = lexical_tokens(cfg, {name: s.texts for name, s in splits.items()})
    y = {name: s.targets() for name, s in splits.items()}
    record = {"modes": {}}
    for name in BASELINES:
        start = time.perf_counter()
        if name == "tfidf_lr":
            probs = tfidf_lr(toks["train"], y["train"], {"val": toks["val"], "test": toks["test"]}, seed=cfg.seed)
        else:
            try:
                probs = fasttext_ova(toks["train"], y["train"], label_names,
                                     {"val": toks["val"], "test": toks["test"]}, seed=cfg.seed)
            except ImportError:
                log.warning("fastText baseline skipped: pip install 'kdedge[baselines]'")
                continue
        record["modes"][name] = {**test_scores(probs["val"], y["val"], probs["test"], y["test"], label_names,
                                               cfg.threshold_min_support),
                                 "seconds": time.perf_counter() - start}
    return record


def ran_on() -> dict:
    """Where a piece ran (kept in its fold file): host, process id and, in a Ray task, the Ray node id."""
    import socket
    import sys

    node = None
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    return {"host": socket.gethostname(), "pid": os.getpid(), "ray_node": node}


def run_fold(cfg: TrainConfig, ds, k: int, plan: CvPlan, progress) -> None:
    """Train every architecture of `plan` (and the baselines) on fold `k` that has no result file yet;
    write one JSON per result."""
    from kdedge.training.train import featurize

    splits = fold_splits(ds, plan, k, cfg.seed, cfg.val_split)
    wv = None
    for arch in plan.archs:
        path = plan.fold_file(k, arch)
        if path.exists():
            continue
        acfg = dataclasses.replace(cfg, arch=arch)
        feats = featurize(acfg, splits, wv)
        # Pre-trained vectors are loaded once per fold. Word2Vec trained on the fold is not shared: it would
        # admit its words below --min-count into the next architecture's vocabulary, so an architecture's
        # result would depend on which ran before it in the same process (resume, --engine ray).
        wv = feats.wv if cfg.vectors else None
        start = time.perf_counter()
        results, selected = train_fold(acfg, feats, plan.out, progress)
        record = fold_record(k, arch, results, selected, feats, splits, acfg, time.perf_counter() - start)
        write_fold_record(path, record | {"ran_on": ran_on()})
        log.info("fold %d %s done in %.0f s", k, arch, record["seconds"])
    path = plan.fold_file(k, "baselines")
    if plan.baselines and not path.exists():
        write_fold_record(path, {"fold": k, **fold_baselines(cfg, splits, ds.label_names), "ran_on": ran_on()})


def _die_with_parent() -> None:
    """Linux: have the kernel send this worker SIGTERM when `kdedge cv` dies, so killing it stops every fold."""
    import ctypes
    import ctypes.util
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl(pr_set_pdeathsig,
                                                                                       signal.SIGTERM)


def _start_fold_worker(core_sets, log_level: int) -> None:
    """Process-pool initializer: take one disjoint set of cores, pin to it and size TensorFlow's threads to it."""
    import threading

    from tqdm import tqdm

    cores = core_sets.get()
    _die_with_parent()
    # tqdm's default lock is a multiprocessing RLock: a named semaphore registered with the parent's resource
    # tracker, which a worker ended by Ctrl-C never unregisters ("2 leaked semaphore objects" after kdedge's
    # own message); a worker's bars need only a thread lock
    tqdm.set_lock(threading.RLock())
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    log_to_stderr(log_level)
    import_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(len(cores))
    tf.config.threading.set_inter_op_parallelism_threads(len(cores))


def usable_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity where the OS has one), sorted."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def split_cores(jobs: int) -> list[set[int]]:
    """This process's CPUs dealt into `jobs` disjoint, non-empty sets (round robin)."""
    cores = usable_cores()
    if jobs > len(cores):
        raise UsageError(f"--jobs {jobs}: only {len(cores)} CPU cores are available to this process")
    return [set(cores[i::jobs]) for i in range(jobs)]


def pieces(plan: CvPlan, fold_ids) -> list[tuple[int, CvPlan]]:
    """The unfinished work of a run as independent pieces: (fold, plan of one architecture) for each
    architecture in `plan.archs` order, fold by fold, then (fold, plan of the baselines only)."""
    out = [(k, dataclasses.replace(plan, archs=(arch,), baselines=False)) for arch in plan.archs for k in fold_ids
           if not plan.fold_file(k, arch).exists()]
    if plan.baselines:
        out += [(k, dataclasses.replace(plan, archs=())) for k in fold_ids if not plan.fold_file(k, "baselines").exists()]
    return out


def _run_pieces_in_parallel(cfg, ds, work: list[tuple[int, CvPlan]], jobs: int) -> None:
    """Run the `pieces` in `jobs` worker processes, each pinned to its own cores, a piece to whichever worker is
    free (whole folds would leave a core idle for the last fold when `jobs` does not divide the folds); the
    first failure stops the rest.

    After Ctrl-C the pool and its queues are released before the interrupt goes on: the CLI ends the process
    with os._exit, which skips multiprocessing's finalizers, and the semaphores they would have unlinked made
    the resource tracker print "There appear to be N leaked semaphore objects" after kdedge's own message."""
    interrupted = False
    try:
        _pool_run(cfg, ds, work, jobs)
    except KeyboardInterrupt:
        interrupted = True  # leaving the handler drops the traceback, and with it the pool's frame
    if interrupted:
        import gc

        gc.collect()  # the pool, its queues and their semaphores are finalized (unlinked) here
        raise KeyboardInterrupt


def _pool_run(cfg, ds, work: list[tuple[int, CvPlan]], jobs: int) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: TensorFlow is not fork-safe
    core_sets = ctx.Queue()
    for cores in split_cores(jobs):
        core_sets.put(cores)
    try:
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start_fold_worker,
                                 initargs=(core_sets, log.getEffectiveLevel())) as pool:
            futures = [pool.submit(run_fold, cfg, ds, k, piece, False) for k, piece in work]
            try:
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            except KeyboardInterrupt:  # the workers got the Ctrl-C too, but one busy importing TensorFlow may
                for child in multiprocessing.active_children():  # take longer than the CLI's grace period
                    child.terminate()
                raise
            for future in pending:
                future.cancel()
            _relaunch_resource_tracker_quietly()  # before the pool's shutdown releases its semaphores
            try:
                for future in done:
                    future.result()  # re-raises a worker's error; finished fold files stay on disk for a resume
            except BrokenProcessPool:
                raise PieceFailed("a fold worker process died (killed, or out of memory); the finished folds are "
                                  "kept: run the same command again to resume") from None
    finally:
        core_sets.close()  # its feeder thread ends and lets go of the queue (and its semaphores)
        core_sets.join_thread()


def _relaunch_resource_tracker_quietly() -> None:
    """If multiprocessing's resource tracker was killed while the workers ran, start it again with its stderr
    (descriptor 2, which the tracker inherits) on /dev/null, before the pool's shutdown releases its
    semaphores: a tracker relaunched by their release would print a KeyError traceback for each semaphore it
    never saw (CPython's tracker, not kdedge) and a UserWarning. kdedge says it in one line instead. A running
    tracker is left as it is."""
    import warnings
    from multiprocessing import resource_tracker

    from kdedge_run.backends import native_stderr_silenced

    with native_stderr_silenced(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resource_tracker.ensure_running()
    if any("died unexpectedly" in str(w.message) for w in caught):
        log.warning("multiprocessing's resource tracker ended during the run (killed?); relaunched without "
                    "output, the results are not affected")


RAY_RETRIES = 2  # runs of a Ray task whose worker died, after the first


def _ray_fold_task(cfg, ds, k, plan: CvPlan) -> None:
    """One Ray task: `run_fold` for fold `k` and `plan` (one architecture, or the baselines), TensorFlow sized
    to the task's CPUs."""
    import ray

    import_tensorflow()
    import tensorflow as tf

    log_to_stderr()
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
    try:  # a reused Ray worker has initialised TensorFlow already: its thread pools stay as they are
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:
        pass
    run_fold(cfg, ds, k, plan, False)


def _run_folds_on_ray(cfg, ds, fold_ids, plan: CvPlan, address=None) -> None:
    """Each unfinished (fold, architecture), and each fold's baselines, as a Ray task; the first failure stops the rest.

    Without `address` (and no RAY_ADDRESS) a local Ray instance is started. A network task needs one CPU
    and, on a cluster with GPUs, one GPU; a baselines task one CPU. The tasks write the fold files
    themselves (atomically, as `run_fold` does), so every node must see `plan.out` at the same path.
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--engine ray needs Ray: pip install 'kdedge[ray]'") from None
    from kdedge_run.raycluster import RayConnectError, connect, failure_line

    try:
        connect(ray, address)
    except RayConnectError as exc:
        raise UsageError(str(exc)) from None
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(_ray_fold_task)
    shared = ray.put(ds)
    work = pieces(plan, fold_ids)
    # a task whose worker process or node dies is run again (it writes its fold file atomically, so a rerun is
    # safe); an error raised by the task itself is not retried
    refs = [task.options(num_cpus=1, num_gpus=0 if piece.baselines else gpus, max_retries=RAY_RETRIES)
            .remote(cfg, shared, k, piece) for k, piece in work]
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done)  # re-raises a task's error; finished fold files stay on disk for a resume
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.RaySystemError) as exc:
                raise PieceFailed(f"a Ray task failed {RAY_RETRIES + 1} times ({failure_line(exc)}); the finished "
                                  "folds are kept: run the same command again to resume") from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    missing = [path.name for path in (piece.fold_file(k, piece.archs[0] if piece.archs else "baselines")
                                      for k, piece in work) if not path.exists()]
    if missing:
        raise UsageError(f"{plan.out}/folds: {', '.join(missing)} not found after the Ray tasks finished: every Ray "
                         "node must see --out at the same path (a shared filesystem)")


def input_hashes(data, vectors) -> dict:
    """SHA-256 of the files a run reads (data, and pre-trained vectors if any): a resume must see the same ones.

    Paths alone cannot tell: Word2Vec trained with several workers differs from run to run.
    """
    from kdedge_run.bundle import file_sha256

    from kdedge.samples import resolve

    hashes = {"data_sha256": file_sha256(resolve(data))}
    if vectors:
        hashes["vectors_sha256"] = file_sha256(vectors)
    return hashes


def _without_inputs(settings: dict, hashed: bool) -> dict:
    """Settings as a resume compares them: not the architectures; where files are hashed, not their paths."""
    out = {k: v for k, v in settings.items() if k not in ("archs", "inputs") and not (hashed and k == "data")}
    out["config"] = {k: v for k, v in out["config"].items()
                     if k not in EXECUTION_SETTINGS and not (hashed and k == "vectors")}
    return out


def run_cv(cfg: TrainConfig, data: str, out: str, *, folds: int = 5, archs=("textcnn",), group_by=None,
           labels_file=None, baselines: bool = True, progress: bool = True, only_folds=None,
           skip_invalid: bool = False, jobs: int = 1, engine: str = "local", address: str | None = None) -> dict:
    """Run (or resume) every fold; finished fold files are kept, so a killed run continues where it stopped.

    `jobs` > 1 runs that many (fold, architecture) pieces at once in worker processes, each pinned to its share
    of the CPU cores (small models use many cores poorly: two one-core folds beat one two-core fold here);
    pieces are queued architecture by architecture, so listing the slowest first shortens the tail. `engine="ray"`
    runs each (fold, architecture) as a task on the Ray cluster at `address` (None: a local instance).
    Its keyword parameters are `kdedge cv`'s options, one to one (as fastText's train_supervised takes its
    command's), which is why there are more than eight.
    """
    _check_workers(cfg, archs, jobs, engine, address)
    from kdedge.training.distribute import get_strategy, is_chief
    from kdedge.crossval.report import write_report

    strategy = get_strategy(cfg)  # first: MultiWorkerMirroredStrategy must precede other TF ops
    out_path = Path(out)
    if not is_chief(strategy):  # a cluster's other workers train alongside the chief and keep their own copy
        out_path = out_path / ".workers" / str(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    (out_path / "folds").mkdir(parents=True, exist_ok=True)
    ds = load_dataset(data, labels_file, skip_invalid=skip_invalid)
    check_trainable(ds, data, cfg.val_split, folds)
    settings = {"data": str(data), "folds": folds, "archs": list(archs), "group_by": group_by,
                "config": cfg.to_dict(), "labels": ds.label_names, "inputs": input_hashes(data, cfg.vectors)}
    settings_path = out_path / "cv.json"
    if settings_path.exists():
        settings["archs"] = _resumed_archs(out_path, settings)
    write_json_atomic(settings_path, settings)
    fold_ids = list(only_folds if only_folds is not None else range(folds))
    plan = CvPlan(folds, tuple(archs), group_by, out_path, baselines)
    if engine == "ray":
        _run_folds_on_ray(cfg, ds, fold_ids, plan, address)
    elif jobs > 1 and len(work := pieces(plan, fold_ids)) > 1:
        _run_pieces_in_parallel(cfg, ds, work, min(jobs, len(work)))
    else:
        for k in fold_ids:
            run_fold(cfg, ds, k, plan, progress)
    return write_report(out_path)


def _check_workers(cfg: TrainConfig, archs, jobs: int, engine: str, address: str | None) -> None:
    """Where the pieces run (`--jobs`, `--engine`, `--address`) and what they are (`--archs`), checked before any
    work."""
    from kdedge.training.distribute import resolve

    if engine not in ("local", "ray"):
        raise UsageError(f"--engine must be local or ray, not {engine!r}")
    if address and engine != "ray":
        raise UsageError("--address names a Ray cluster: use it with --engine ray")
    if engine == "ray" and jobs > 1:
        raise UsageError("--jobs sizes the local process pool; with --engine ray the cluster's CPUs decide")
    unknown = [arch for arch in archs if arch not in ARCHITECTURES]
    if unknown or not archs:
        problem = f"unknown architecture {', '.join(map(repr, unknown))}" if unknown else "none given"
        raise UsageError(f"--archs: {problem}; choose from {', '.join(ARCHITECTURES)}")
    if jobs > 1 and resolve(cfg.strategy) == "multiworker":
        raise UsageError("--jobs runs folds in local processes; with --strategy multiworker use --jobs 1")


def _resumed_archs(out_path: Path, settings: dict) -> list[str]:
    """The architectures of the run already in `out_path` and of this command, once every finished fold is intact
    and the run's settings and input files are this command's; else a UsageError."""
    settings_path = out_path / "cv.json"
    previous = read_settings(out_path)
    read_fold_records(out_path, previous)  # every finished fold intact, before any work
    # settings added to kdedge after that run started count as what it did without them
    previous["config"] = {**TrainConfig().to_dict(), **SETTINGS_BEFORE_ADDED, **previous.get("config", {})}
    inputs = previous.get("inputs")  # runs made before hashes were kept have none: their paths must match
    if inputs is not None:
        for name in sorted(set(inputs) | set(settings["inputs"])):
            if inputs.get(name) != settings["inputs"].get(name):
                kind = name.removesuffix("_sha256")
                raise UsageError(f"{settings_path}: the {kind} file differs from the one this run started with "
                                 f"(sha256 {str(inputs.get(name))[:16]}…); use that file or another --out")
    same = _without_inputs(previous, inputs is not None) == _without_inputs(settings, inputs is not None)
    if not same:
        raise UsageError(f"{settings_path}: this directory holds a run with other settings; use another --out")
    return list(dict.fromkeys(previous["archs"] + settings["archs"]))
