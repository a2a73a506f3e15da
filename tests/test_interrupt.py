"""Interrupted work: `kill -9` in the middle of kdedge train / cv / export, then the state left behind.

Guarantees proved here (docs/reliability.md):
- a killed `kdedge train` or `kdedge export` leaves nothing under the final --out name (only
  dot-prefixed temporary siblings), and the same command then runs to completion;
- the commit step (staging dir → final name) leaves the final name absent, old or new — never partial;
- a killed `kdedge cv` keeps its finished fold files; re-running it resumes and gives the same
  results.json numbers as a run that was never killed (here also: --skip-invalid, and a label with
  only 2 texts in 3 folds, absent from one test fold, scores F1 0 there instead of crashing).

Real subprocesses with tiny settings; both cv runs (the never-killed reference and the one killed)
start in the background and run while the train/export tests do, to keep the file's wall time down.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_corpus, without_timings, write_jsonl

pytestmark = pytest.mark.slow  # killed and spawned processes

KDEDGE = [sys.executable, "-m", "kdedge.cli"]
TINY = 'embedding_dim = 16\nw2v_epochs = 1\nsegmenter = "char"\nbatch_size = 16\narch_params = {filters = 8}\n'
RARE = "罕见"
CV_ARGS = ["--folds", "3", "--no-baselines", "--epochs", "2", "--patience", "2", "--max-len", "16",
           "--config", "tiny.toml", "--skip-invalid", "-q"]
TIMEOUT = 240


class Proc:
    """A subprocess whose stderr is collected in the background (tqdm writes \\r, not lines)."""

    def __init__(self, args, cwd: Path):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.err = bytearray()
        self.out = bytearray()
        self._threads = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                         for s, b in ((self.popen.stderr, self.err), (self.popen.stdout, self.out))]
        for t in self._threads:
            t.start()
        self.started = time.monotonic()

    def _pump(self, stream, buf):
        while chunk := os.read(stream.fileno(), 65536):
            buf.extend(chunk)

    def wait_until(self, condition, what: str, timeout: float = TIMEOUT) -> float:
        """Poll `condition()` until true (→ seconds since start); fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                if self.popen.poll() is not None:
                    pytest.fail(f"process finished before it could be killed ({what}): {self.text()[-2000:]}")
                return time.monotonic() - self.started
            if self.popen.poll() is not None:
                pytest.fail(f"process ended (exit {self.popen.returncode}) before {what}: {self.text()[-2000:]}")
            time.sleep(0.02)
        self.kill()
        pytest.fail(f"timed out waiting for {what}")

    def kill(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=60)
        assert self.popen.returncode == -signal.SIGKILL

    def finish(self, timeout: float = TIMEOUT) -> int:
        code = self.popen.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=10)
        return code

    def text(self) -> str:
        return self.err.decode("utf-8", "replace")


def run(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def visible(directory: Path) -> set[str]:
    """Entries of `directory` that are not dot-prefixed temporaries."""
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """data.jsonl (60 keyword texts + 2 texts of a rare label + 1 invalid line) and tiny.toml."""
    root = tmp_path_factory.mktemp("interrupt")
    rows = make_corpus(60, seed=1)
    rows += [{"id": "rare1", "text": "今天罕见的彗星出现了。", "labels": [RARE]},
             {"id": "rare2", "text": "朋友说罕见彗星很美。", "labels": [RARE, "体育"]}]
    write_jsonl(root / "data.jsonl", rows)
    with open(root / "data.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "bad", "text": 5, "labels": []}\n')  # skipped by --skip-invalid
    (root / "tiny.toml").write_text(TINY, encoding="utf-8")
    return root


def _cv_folds(work: Path) -> tuple[int, int]:
    """(fold whose test part has no text of the rare label, another fold), as `kdedge cv` will split."""
    from kdedge.text.data import load_dataset
    from kdedge.text.folds import kfold

    ds = load_dataset(work / "data.jsonl", skip_invalid=True)
    fold_of = kfold(ds.targets(), 3, 0)
    rare = ds.targets()[:, ds.label_names.index(RARE)] > 0
    empty = [k for k in range(3) if not rare[fold_of == k].any()]
    assert empty, "the rare label reached every test fold"
    return empty[0], next(k for k in range(3) if k != empty[0])


class KilledCv:
    """`kdedge cv` started in the background and killed (by a watcher thread) once its first fold
    is written and the second fold's student is trained (its teacher may come from the cache, which the
    reference run shares); the kill-time state is recorded."""

    def __init__(self, work: Path, args):
        self.work, self.args = work, args
        self.first = int(args[args.index("--only-fold") + 1])
        self.folds = work / "cv_int" / "folds"
        self.proc = Proc(args, work)
        self.error: str | None = None
        self.at_kill: dict = {}
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        done = f"fold {self.first} textcnn done".encode()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            err = bytes(self.proc.err)
            if done in err and b"textcnn student:" in err.split(done, 1)[1]:
                break
            if self.proc.popen.poll() is not None:
                self.error = f"cv ended (exit {self.proc.popen.returncode}) before the kill: {err[-2000:]!r}"
                return
            time.sleep(0.02)
        else:
            self.error = "timed out waiting for the second fold"
        if self.proc.popen.poll() is not None:
            self.error = "cv finished before it could be killed"
            return
        self.proc.kill()
        kept = self.folds / f"fold{self.first}_textcnn.json"
        self.at_kill = {"visible": visible(self.folds), "results": (self.work / "cv_int" / "results.json").exists(),
                        "kept": (kept.read_bytes(), kept.stat().st_mtime_ns, kept.stat().st_ino)
                        if kept.exists() else None}


@pytest.fixture(scope="module", autouse=True)
def cv_runs(work):
    """Both cv runs start at once, in the background, while the train/export tests run:
    the never-killed reference and the one that gets killed mid-run."""
    folds = _cv_folds(work)
    only = [a for k in folds for a in ("--only-fold", str(k))]
    ref = Proc(KDEDGE + ["cv", "--data", "data.jsonl", "--out", "cv_ref", *CV_ARGS, *only], work)
    killed = KilledCv(work, KDEDGE + ["cv", "--data", "data.jsonl", "--out", "cv_int", *CV_ARGS, *only])
    yield {"ref": ref, "killed": killed, "folds": folds}
    for proc in (ref, killed.proc):
        if proc.popen.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------------------- train

def test_train_killed_mid_training_leaves_no_final_directory(work):
    train = work / "train"
    train.mkdir()
    args = KDEDGE + ["train", "--data", "../data.jsonl", "--out", "run", "--epochs", "30", "--max-len", "16",
                     "--config", "../tiny.toml", "--skip-invalid"]
    proc = Proc(args, train)
    # the first network's progress bar (the default linear teacher has none: the student comes first)
    epochs = re.compile(rb"(?:teacher|student):[^\r\n]*?\b(\d+)/30")
    seconds = proc.wait_until(lambda: any(int(n) >= 1 for n in epochs.findall(bytes(proc.err))),
                              "a first training epoch")
    proc.kill()
    assert not (train / "run").exists(), f"killed after {seconds:.1f} s"
    assert visible(train) == set()  # only dot-prefixed temporaries may remain

    # the same command (cut to one mode and 2 epochs) runs to completion afterwards: nothing left blocks it
    run(KDEDGE + ["train", "--data", "../data.jsonl", "--out", "run", "--epochs", "2", "--max-len", "16",
                  "--config", "../tiny.toml", "--skip-invalid", "--mode", "student", "-q"], train)
    assert {"config.json", "metrics.json", "student.keras", "vocab.txt"} <= visible(train / "run")
    assert json.loads((train / "run" / "config.json").read_text(encoding="utf-8"))["data"]["skipped"] == 1


def test_train_interrupted_or_killed_resumes_from_its_finished_phases(work):
    """Ctrl-C once the plain student is trained: exit 130, the phases are kept beside --out; the same command
    again takes them (the vectors and the student are not trained again) and is then killed (kill -9) once
    the teacher is kept too; the third run takes all three and finishes, and the kept phases are removed."""
    train = work / "resume"
    train.mkdir()
    args = KDEDGE + ["train", "--data", "../data.jsonl", "--out", "run", "--epochs", "3", "--patience", "3",
                     "--max-len", "16", "--config", "../tiny.toml", "--skip-invalid", "--teacher", "linear"]
    kept = train / ".run.resume"
    proc = Proc(args, train)
    proc.wait_until(lambda: (kept / "student.json").exists(), "the plain student kept")
    os.kill(proc.popen.pid, signal.SIGINT)
    assert proc.finish() == 130, proc.text()[-2000:]
    assert "the same command resumes" in proc.text() and "Traceback" not in proc.text()
    assert not (train / "run").exists() and (kept / "student.json").exists()
    student = json.loads((kept / "student.json").read_text(encoding="utf-8"))["fit"]

    proc = Proc(args, train)
    proc.wait_until(lambda: (kept / "teacher-linear.json").exists(), "the teacher kept")
    proc.kill()
    assert "resumed: Word2Vec vectors" in proc.text() and "resumed: student" in proc.text()
    assert not (train / "run").exists()

    final = run(args, train)
    assert all(f"resumed: {name}" in final.stderr for name in ("Word2Vec vectors", "student", "teacher-linear"))
    assert "resumed: kd" not in final.stderr  # it was not finished: trained now
    metrics = json.loads((train / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["modes"]["student"]["seconds"] == round(student["seconds"], 2)  # the kept one, not retrained
    assert set(metrics["modes"]) == {"teacher", "student", "kd"} and not kept.exists()
    assert visible(train) == {"run"}


COMMIT_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from kdedge import files

    out, fn, nth = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    real = {"replace": os.replace, "fsync": os.fsync}
    calls = {"replace": 0, "fsync": 0}

    def patched(name):
        def call(*args, **kwargs):
            calls[name] += 1
            if name == fn and calls[name] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return real[name](*args, **kwargs)
        return call

    tmp = files.staging_dir(out, force=True)
    (tmp / "sub").mkdir()
    for rel in ("metrics.json", "sub/model.bin", "vocab.txt"):
        (tmp / rel).write_text("new " + rel)
    os.replace, os.fsync = patched("replace"), patched("fsync")
    files.commit_dir(tmp, out)
    files.write_json_atomic(out.parent / "state.json", {"version": "new"})
""")


def _tree(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "force-replace"])
@pytest.mark.parametrize("point", ["fsync 1", "fsync 3", "replace 1", "replace 2", "replace 3", "none"])
def test_commit_killed_at_every_step_never_leaves_a_partial_directory(tmp_path, existing, point):
    out = tmp_path / "run"
    old = {"metrics.json": "old", "vocab.txt": "old"}
    if existing:
        out.mkdir()
        for rel, text in old.items():
            (out / rel).write_text(text)
    (tmp_path / "state.json").write_text('{"version": "old"}')
    fn, nth = point.split() if point != "none" else ("none", "0")
    script = tmp_path / "commit.py"
    script.write_text(COMMIT_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(out), fn, nth], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
    new = {rel: "new " + rel for rel in ("metrics.json", "sub/model.bin", "vocab.txt")}
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["version"] in ("old", "new")  # write_json_atomic: old or new, never half
    assert visible(tmp_path) <= {"run", "commit.py", "state.json"}
    if out.exists():
        assert _tree(out) in (old, new)
    elif existing:  # only when killed between moving the old run aside and moving the new one in
        assert point == "replace 2"
        aside = [p for p in tmp_path.iterdir() if p.name.startswith(".run.old")]
        assert len(aside) == 1 and _tree(aside[0]) == old  # the previous run is recoverable
    if point == "none":
        assert proc.returncode == 0 and _tree(out) == new and state["version"] == "new"


# ------------------------------------------------------------------------------------------ export

def test_export_killed_mid_run_leaves_no_final_bundle(work):
    run_dir = work / "train" / "run"
    if not (run_dir / "student.keras").exists():
        pytest.skip("needs the run of test_train_killed_mid_training_leaves_no_final_directory")
    help_ = subprocess.run(KDEDGE + ["export", "--help"], capture_output=True, text=True, timeout=120)
    if help_.returncode != 0:
        pytest.skip("kdedge export does not exist")
    exports = work / "exports"
    exports.mkdir()
    proc = Proc(KDEDGE + ["export", str(run_dir), "--out", "bundle", "--format", "onnx", "--model", "student"], exports)
    proc.wait_until(lambda: any(p.name.startswith(".bundle.tmp") for p in exports.iterdir()),
                    "the export's staging directory")
    proc.kill()
    assert not (exports / "bundle").exists()
    assert visible(exports) == set()
    assert any(p.name.startswith(".bundle.tmp") for p in exports.iterdir())


# -------------------------------------------------------------------------------------------- cv

def test_cv_killed_then_resumed_equals_an_uninterrupted_run(work, cv_runs):
    first, second = cv_runs["folds"]
    killed = cv_runs["killed"]
    killed.thread.join(timeout=TIMEOUT)
    assert killed.error is None, killed.error
    assert killed.at_kill["visible"] == {f"fold{first}_textcnn.json"}  # fold `second` was under way
    assert killed.at_kill["results"] is False
    kept = killed.folds / f"fold{first}_textcnn.json"

    resumed = Proc(killed.args, work)
    assert resumed.finish() == 0, resumed.text()[-3000:]
    assert f"fold {first} textcnn done" not in resumed.text()  # the finished fold was not redone
    assert (kept.read_bytes(), kept.stat().st_mtime_ns, kept.stat().st_ino) == killed.at_kill["kept"]

    ref = cv_runs["ref"]
    assert ref.finish() == 0, ref.text()[-3000:]
    ref_dir, int_dir = work / "cv_ref", work / "cv_int"
    for k in (first, second):
        a = json.loads((ref_dir / "folds" / f"fold{k}_textcnn.json").read_text(encoding="utf-8"))
        b = json.loads((int_dir / "folds" / f"fold{k}_textcnn.json").read_text(encoding="utf-8"))
        assert without_timings(a) == without_timings(b), f"fold {k}"
    results = [json.loads((d / "results.json").read_text(encoding="utf-8")) for d in (ref_dir, int_dir)]
    results[1]["settings"]["data"] = results[0]["settings"]["data"]
    assert without_timings(results[0]) == without_timings(results[1])

    # the rare label (2 texts) has no text in fold `first`'s test part: F1 0 there, no crash
    record = json.loads(kept.read_text(encoding="utf-8"))
    assert sum(row[results[0]["settings"]["labels"].index(RARE)] for row in record["test_truth"]) == 0
    for mode in record["modes"].values():
        assert mode["tuned"]["per_label_f1"][RARE] == 0.0 and np.isfinite(mode["tuned"]["macro_f1"])
    assert RARE in results[0]["architectures"]["textcnn"]["kd"]["per_label_f1"]


def _spawned_workers(parent: int, marker: bytes = b"spawn_main") -> list[int]:
    """Process ids of `parent`'s multiprocessing children whose command line holds `marker` (default: the --jobs
    fold workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == parent and marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--jobs 2 needs two CPU cores")
def test_a_killed_jobs_worker_ends_cv_with_one_line_and_the_same_command_resumes(work, tmp_path):
    """kill -9 of a `kdedge cv --jobs 2` fold worker: was a BrokenProcessPool traceback (issue 31)."""
    args = KDEDGE + ["cv", "--data", str(work / "data.jsonl"), "--out", str(tmp_path / "cv"), "--jobs", "2",
                     "--folds", "3", "--no-baselines", "--epochs", "2", "--patience", "2", "--max-len", "16",
                     "--config", str(work / "tiny.toml"), "--skip-invalid", "-q"]
    proc = Proc(args, work)
    proc.wait_until(lambda: len(_spawned_workers(proc.popen.pid)) >= 2, "two fold workers")
    time.sleep(2)  # the workers take their pieces
    os.kill(_spawned_workers(proc.popen.pid)[0], signal.SIGKILL)
    assert proc.finish(timeout=120) == 2
    last = proc.text().strip().splitlines()[-1]
    assert last.startswith("kdedge: error: a fold worker process died") and "run the same command again" in last
    assert "Traceback" not in proc.text()
    done = run(args, work)  # resumes: the pieces that finished are kept
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "cv" / "folds").iterdir()) == [
        f"fold{k}_textcnn.json" for k in range(3)]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--jobs 2 needs two CPU cores")
def test_ctrl_c_of_cv_jobs_leaves_no_leaked_semaphore_message(work, tmp_path):
    """Ctrl-C of `kdedge cv --jobs 2` while the workers train: exit 130 with kdedge's one message; it was
    followed by the resource tracker's "There appear to be N leaked semaphore objects" (issue 30)."""
    args = KDEDGE + ["cv", "--data", str(work / "data.jsonl"), "--out", str(tmp_path / "cv"), "--jobs", "2",
                     "--folds", "3", "--no-baselines", "--epochs", "30", "--patience", "30", "--max-len", "16",
                     "--config", str(work / "tiny.toml"), "--skip-invalid"]
    proc = Proc(args, work)
    proc.wait_until(lambda: len(_spawned_workers(proc.popen.pid)) >= 2, "two fold workers")
    proc.wait_until(lambda: "epochs" in proc.text() or "/30" in proc.text(), "a worker training")
    os.kill(proc.popen.pid, signal.SIGINT)
    assert proc.finish(timeout=60) == 130
    time.sleep(2)  # the resource tracker writes its warning when it ends, after the parent
    assert "leaked semaphore" not in proc.text() and "Traceback" not in proc.text(), proc.text()[-2000:]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--jobs 2 needs two CPU cores")
def test_a_killed_resource_tracker_does_not_print_tracebacks(work, tmp_path):
    """kill -9 of multiprocessing's resource tracker while `kdedge cv --jobs 2` runs: the run finishes (exit 0)
    with one line about it; it printed a UserWarning and a KeyError traceback per semaphore (issue 30)."""
    args = KDEDGE + ["cv", "--data", str(work / "data.jsonl"), "--out", str(tmp_path / "cv"), "--jobs", "2",
                     "--folds", "3", "--no-baselines", "--epochs", "2", "--patience", "2", "--max-len", "16",
                     "--config", str(work / "tiny.toml"), "--skip-invalid", "-q"]
    proc = Proc(args, work)
    proc.wait_until(lambda: len(_spawned_workers(proc.popen.pid)) >= 2, "two fold workers")
    trackers = _spawned_workers(proc.popen.pid, b"resource_tracker")
    assert len(trackers) == 1
    os.kill(trackers[0], signal.SIGKILL)
    assert proc.finish(timeout=TIMEOUT) == 0, proc.text()[-2000:]
    time.sleep(1)  # a relaunched tracker writes when it ends, after the parent
    text = proc.text()
    assert "Traceback" not in text and "KeyError" not in text and "UserWarning" not in text, text[-2000:]
    assert "resource tracker ended during the run" in text
    assert len(list((tmp_path / "cv" / "folds").iterdir())) == 3
