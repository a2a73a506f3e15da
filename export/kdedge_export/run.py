"""Read a training run directory (written by `kdedge train`) for export."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ExportError

MODEL_KINDS = ("kd", "student")


@dataclass
class Run:
    """What export needs from a run: its settings, the validation split and the chosen model's logits."""

    path: Path
    config: dict                    # config.json as written by kdedge.train
    model_kind: str                 # kd | student
    labels: list[str]
    val_texts: list[str]
    val_tokens: list[list[str]]
    val_y: np.ndarray               # [n_val, n_labels] 0/1
    val_logits: np.ndarray          # the Keras model's validation logits, saved at training
    metrics: dict = field(default_factory=dict)

    @property
    def train_config(self) -> dict:
        return self.config.get("config", {})

    @property
    def arch(self) -> str:
        return self.train_config["arch"]

    @property
    def input_spec(self) -> dict:
        return self.config["input"]

    @property
    def segmenter(self) -> dict:
        return self.config["segmenter"]

    @property
    def model_file(self) -> Path:
        return self.path / f"{self.model_kind}.keras"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: missing; is {path.parent} a run directory written by `kdedge train`?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: cannot read: {e}") from None


def selected_model(root: Path, metrics) -> str:
    """The student the run selected on its validation split (metrics.json "selected"), else "kd"."""
    selected = metrics.get("selected") if isinstance(metrics, dict) else None
    mode = selected.get("mode") if isinstance(selected, dict) else None
    if mode is None:
        return "kd"
    if mode not in MODEL_KINDS:
        raise ExportError(f"{root / 'metrics.json'}: 'selected' names {mode!r}, not one of {', '.join(MODEL_KINDS)}")
    return mode


def load_run(run_dir, model_kind: str | None = None) -> Run:
    """Check and read the run directory (`model_kind` None: the student the run selected); raises ExportError
    naming the missing or bad file."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ExportError(f"{root}: no such run directory")
    metrics = _read_json(root / "metrics.json") if (root / "metrics.json").is_file() else {}
    model_kind = selected_model(root, metrics) if model_kind is None else model_kind
    if model_kind not in MODEL_KINDS:
        raise ExportError(f"--model must be one of {', '.join(MODEL_KINDS)}, not {model_kind!r}")
    config = _read_json(root / "config.json")
    for key in ("config", "labels", "input", "segmenter"):
        if key not in config:
            raise ExportError(f"{root / 'config.json'}: no '{key}' (written by an incompatible kdedge version?)")
    labels = list(config["labels"])
    if not (root / f"{model_kind}.keras").is_file():
        have = sorted(p.stem for p in root.glob("*.keras"))
        raise ExportError(f"{root}: no {model_kind}.keras (the run has {', '.join(have) or 'no model'}; "
                          f"train with --mode {model_kind} or all, or export --model "
                          f"{'student' if model_kind == 'kd' else 'kd'})")
    for rel in ("vocab.txt", "validation.jsonl", f"predictions/val_{model_kind}.npy"):
        if not (root / rel).is_file():
            raise ExportError(f"{root / rel}: missing from the run directory")
    texts, tokens, rows = [], [], []
    index = {name: i for i, name in enumerate(labels)}
    with open(root / "validation.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                texts.append(rec["text"])
                tokens.append(list(rec["tokens"]))
                row = np.zeros(len(labels), dtype=np.float64)
                for lab in rec["labels"]:
                    row[index[lab]] = 1.0
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ExportError(f"{root / 'validation.jsonl'}:{n}: bad record ({e!r})") from None
            rows.append(row)
    if not texts:
        raise ExportError(f"{root / 'validation.jsonl'}: no validation texts; calibration and parity need them")
    try:
        logits = np.load(root / "predictions" / f"val_{model_kind}.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ExportError(f"{root}/predictions/val_{model_kind}.npy: cannot read: {e}") from None
    if logits.shape != (len(texts), len(labels)):
        raise ExportError(f"{root}/predictions/val_{model_kind}.npy: shape {list(logits.shape)}, expected "
                          f"[{len(texts)} validation texts, {len(labels)} labels]")
    return Run(root, config, model_kind, labels, texts, tokens, np.stack(rows), logits.astype(np.float64), metrics)


def read_vocab(run: Run) -> list[str]:
    """The run's vocab.txt: token of id i on line i ("\\n" line ends, as the runtime reads it)."""
    return (run.path / "vocab.txt").read_bytes().decode("utf-8").split("\n")[:-1]


def load_keras(run: Run):
    """The run's Keras model (ids → logits), its body (embedded → dict) and its embedding table."""
    import keras

    import kdedge.models  # noqa: F401  (registers the custom layers)

    try:
        model = keras.models.load_model(run.model_file, compile=False)
    except Exception as e:  # Keras raises many types for unreadable archives
        raise ExportError(f"{run.model_file}: cannot load the Keras model: {e}") from e
    try:
        body = model.get_layer("body")
        table = np.asarray(model.get_layer("embedding").get_weights()[0], dtype=np.float32)
    except (ValueError, IndexError) as e:
        raise ExportError(f"{run.model_file}: expected an 'embedding' layer and a nested 'body' model "
                          f"(kdedge.models): {e}") from e
    return model, body, table
