"""What an interrupted `kdedge train` keeps, so that the same command run again resumes.

Every finished phase (the Word2Vec vectors, each teacher, the plain student, the KD student) is stored as soon
as it is done in `.OUT.resume/` beside the output `OUT`, under a key of everything it depends on (the
settings that change what is learned, the data and labels files' bytes, the vectors file, kdedge's version).
The same command after Ctrl-C, kill -9 or a crash finds them and trains only what is missing; other settings
or data start over. The directory is locked (flock) while a run uses it, so a second `kdedge train` into the
same `--out` is refused up front, and it is removed once the run directory is committed.

A phase is two or three files: `NAME.npz` (its logits per split), `NAME.keras` (the network, when it is one)
and `NAME.json` (its fit, written last: a phase without it, or with a damaged file, is trained again).
Nothing is pickled.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from kdedge.files import NPY_READ_ERRORS, atomic_path, check_regular_file, read_json_file, write_json_atomic
from kdedge.training.trained import Fit, KDChoice, Trained
from kdedge_run.locks import exclusive_lock

log = logging.getLogger("kdedge")
RESUME_VERSION = 1  # bump when what a phase stores changes
KEY_FILE, LOCK_FILE = "key.json", "lock"
MAX_PHASE_JSON_BYTES = 64 * 2**20  # a fit's history: a few KB per epoch


class RunBusyError(FileExistsError):
    """Another `kdedge train` is writing the same output."""


def resume_dir(out: Path) -> Path:
    """Where the phases of a run into `out` are kept: `.OUT.resume` beside it."""
    out = Path(os.path.abspath(out))
    return out.with_name(f".{out.name}.resume")


def _lock(path: Path, out: Path) -> int:
    fd = exclusive_lock(path)
    if fd is None:
        raise RunBusyError(f"{out}: another kdedge train is writing it (its finished phases are in {path.parent}); "
                           "wait for it to finish or choose another --out")
    return fd


class Phases:
    """The finished phases of one run into `out`, kept in `resume_dir(out)` under `identity`'s key (`restart`:
    those an earlier run kept are dropped)."""

    def __init__(self, out: Path, identity: dict, restart: bool = False):
        self.out = Path(out)
        self.root = resume_dir(out)
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise FileExistsError(f"{self.root}: exists and is not a directory kdedge train made; remove it")
        self.root.mkdir(parents=True, exist_ok=True)
        self._fd = _lock(self.root / LOCK_FILE, self.out)
        self.key = hashlib.sha256(json.dumps({"version": RESUME_VERSION, **identity}, sort_keys=True,
                                             ensure_ascii=False).encode()).hexdigest()
        self.resumed: list[str] = []
        try:
            kept = read_json_file(self.root / KEY_FILE, 4096).get("key")
        except (ValueError, OSError, AttributeError):
            kept = None
        stale = [p for p in self.root.iterdir() if p.name not in (LOCK_FILE, KEY_FILE)]
        if kept != self.key and stale and not restart:
            log.info("kdedge: the phases kept in %s are of other settings or data: training from the start",
                     self.root)
        if kept != self.key or restart:
            for path in stale:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            write_json_atomic(self.root / KEY_FILE, {"key": self.key})

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        return self.root / f"{name}.json", self.root / f"{name}.npz", self.root / f"{name}.keras"

    def _note(self, name: str) -> None:
        self.resumed.append(name)
        log.info("kdedge: resumed: %s kept from an interrupted run (%s)", name, self.root)

    def vectors(self, train: Callable[[], object]) -> object:
        """The Word2Vec vectors: kept ones, else `train()`'s, kept."""
        from kdedge.text.embed import load_vectors, save_vectors

        path, done = self.root / "vectors.bin", self.root / "vectors.json"
        if done.is_file():
            try:
                check_regular_file(path)
                wv = load_vectors(path)
            except (ValueError, OSError):
                pass
            else:
                self._note("Word2Vec vectors")
                return wv
        wv = train()
        save_vectors(wv, path)
        write_json_atomic(done, {"done": True})
        return wv

    def trained(self, name: str, train: Callable[[], Trained]) -> Trained:
        """Phase `name`: the kept teacher or student, else `train()`'s, kept at once."""
        kept = self._load(name)
        if kept is not None:
            self._note(name)
            return kept
        result = train()
        self._save(name, result)
        return result

    def _save(self, name: str, result: Trained) -> None:
        record, arrays, model = self._paths(name)
        with atomic_path(arrays) as tmp:
            np.savez(tmp, **{f"{split}_logits": logits for split, logits in result.logits.items()})
        if result.model is not None:
            with atomic_path(model) as tmp:
                result.model.save(tmp)
        write_json_atomic(record, {"fit": result.fit.to_dict(), "kd": result.kd.to_dict() if result.kd else None,
                                   "trim": result.trim, "model": result.model is not None})

    def _load(self, name: str) -> Trained | None:
        record_path, arrays, model_path = self._paths(name)
        if not record_path.is_file():
            return None
        try:
            record = read_json_file(record_path, MAX_PHASE_JSON_BYTES, allow_nan=True)
            check_regular_file(arrays)
            with np.load(arrays, allow_pickle=False) as stored:
                logits = {key.removesuffix("_logits"): stored[key] for key in stored.files}
            model = None
            if record["model"]:
                import keras

                import kdedge.networks.models  # noqa: F401  (registers the custom layers)

                check_regular_file(model_path)
                model = keras.models.load_model(model_path, compile=False)
            return Trained(fit=Fit.from_dict(record["fit"]), logits=logits, model=model, trim=bool(record["trim"]),
                           kd=KDChoice(**record["kd"]) if record["kd"] else None)
        except (*NPY_READ_ERRORS, KeyError, TypeError, AttributeError) as exc:
            log.info("kdedge: the kept %s is damaged (%s): training it again", name, exc)
            return None
        except Exception as exc:  # Keras raises many types for an unreadable archive
            log.info("kdedge: the kept %s cannot be loaded (%s): training it again", name, exc)
            return None

    def release(self, finished: bool) -> None:
        """Unlock; remove the kept phases once the run is `finished` (committed)."""
        os.close(self._fd)
        if finished:
            shutil.rmtree(self.root, ignore_errors=True)
